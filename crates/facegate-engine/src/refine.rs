//! A second look at each detected face, upright and at the recognizer's scale, whose five
//! keypoints replace the first look's (a pack's `detector.refine_canvas`).

use image::RgbImage;
use ort::session::Session;

use crate::align::{apply, invert, similarity_transform, warp_to_planar, ARCFACE_TEMPLATE};
use crate::detect::{nms, run_and_decode, Canvas, DetectScratch, Detection, DetectorParams, OutputMap};
use crate::error::Result;
use crate::pack::ChannelOrder;

/// Looks at each face a second time, upright and at the recognizer's scale, and keeps the
/// keypoints of that look.
///
/// Why: the recognizer is only as steady as the five points its crop is fitted to. A detector
/// places its points relative to its anchor grid, so a face at an arbitrary position, size and
/// roll gets points with an error that changes from photo to photo. Warped by its first points
/// onto the ArcFace template in the middle of a `refine_canvas`-sided square, every face sits at
/// the same place, scale and roll on the grid, and the detector's error there is nearly the same
/// for every photo, so it no longer separates two photos of one person. On LFW's `pairs_dev.txt`
/// it takes YuNet + SFace from 99.20 % to 99.50 % (docs/accuracy.md), and the same faces
/// photographed at another size get points a third steadier. The first look's box and
/// score stay; a face not found again keeps its first points.
pub fn refine_keypoints(
    session: &mut Session,
    outputs: &OutputMap,
    params: &DetectorParams,
    scratch: &mut DetectScratch,
    img: &RgbImage,
    faces: &mut [Detection],
) -> Result<()> {
    let Some(side) = params.refine_canvas else {
        return Ok(());
    };
    let canvas = Canvas { content_w: side, content_h: side, offset_x: 0, offset_y: 0, input_w: side, input_h: side };
    let margin = (side as f32 - 112.0) / 2.0;
    let template = ARCFACE_TEMPLATE.map(|[x, y]| [x + margin, y + margin]);
    let centre = side as f32 / 2.0;
    let plane = (side * side) as usize;
    for face in faces {
        let Some(forward) = similarity_transform(&face.landmarks, &template) else {
            continue;
        };
        let Some(back) = invert(&forward) else {
            continue;
        };
        scratch.input.resize(3 * plane, 0.0);
        if !warp_to_planar(img, &forward, side, params.mean, params.std, &mut scratch.input) {
            continue;
        }
        if params.channels == ChannelOrder::Bgr {
            let (red, rest) = scratch.input.split_at_mut(plane);
            red.swap_with_slice(&mut rest[plane..]);
        }
        let found = nms(run_and_decode(session, outputs, params, &scratch.input, &canvas)?, params.nms_iou);
        // The face the canvas was built around covers its centre; a neighbour never does.
        let again = found
            .into_iter()
            .filter(|d| {
                d.bbox.left <= centre && centre <= d.bbox.right && d.bbox.top <= centre && centre <= d.bbox.bottom
            })
            .min_by(|a, b| {
                let dist = |d: &Detection| {
                    let (x, y) =
                        ((d.bbox.left + d.bbox.right) / 2.0 - centre, (d.bbox.top + d.bbox.bottom) / 2.0 - centre);
                    x * x + y * y
                };
                dist(a).total_cmp(&dist(b))
            });
        if let Some(again) = again {
            face.landmarks = again.landmarks.map(|p| apply(&back, p));
        }
    }
    Ok(())
}
