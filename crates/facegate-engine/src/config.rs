//! The engine's settings: [`EngineConfig`] with its defaults and checks, and the settings each
//! stage runs with, resolved from the config and the pack's manifest.

use std::path::{Path, PathBuf};

use crate::align::{arcface_template, CropGeometry};
use crate::attributes::LandmarkParams;
use crate::decode::{DecodeLimits, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS};
use crate::detect::{DetectorParams, PadFill};
use crate::embed::RecognizerParams;
use crate::error::{EngineError, Result};
use crate::pack::{pack_dir, Manifest, Pack, RecognizerSpec};

/// The pack used when none is named: the licence-clean yunet_sface (MIT, Apache-2.0 and CC0
/// weights), so that a fresh install may go to production as it is. buffalo_s, whose weights are
/// for non-commercial research only (`serve` warns at start), stays available by name; it is a
/// little more accurate on LFW (99.63 % against 99.47 % 5-fold on `pairs_dev.txt`, inside the
/// folds' spread, but 0.31 % against 0.56 % of genuine pairs missed at score 7000)
/// (docs/accuracy.md, "The licence-clean pack").
pub const DEFAULT_PACK: &str = "yunet_sface";

/// Margin added on each side, as a fraction of width/height, when a first detection pass finds
/// nothing. SCRFD misses faces that fill the whole frame (selfies, ID-photo crops scaled up);
/// a margin gives them the context it was trained with. Measured on the 40 faceapi identity
/// faces cropped and scaled so that the face fills the frame (150 px crop scaled to 640 px /
/// 100 px centre crop scaled to 400 px): no retry 0/40 and 0/40; 25% black 28/40 and 0/40;
/// 25% edge-coloured 3/40 and 0/40; 50% black 40/40 and 37/40; 100% black 40/40 and 39/40.
/// 50% nearly saturates while keeping small faces at a usable size.
pub const RETRY_PAD: f32 = 0.5;
/// Colour of that margin: black beat repeated edge pixels by 28 to 3 faces in the measurement
/// above (edge colours smear the face's outline into the margin).
pub const RETRY_FILL: PadFill = PadFill::Zero;

/// Where `scripts/setup` puts the ONNX Runtime library and the model packs, relative to the
/// working directory (`make run` starts from the repository root).
pub const DEFAULT_HOME: &str = ".facegate";
/// Longest side the detector sees. 640 is SCRFD's training size; it finds faces down to ~15 px.
pub const DEFAULT_MAX_DETECTOR_SIDE: u32 = 640;
/// Minimum detector score for a pack whose manifest names none. 0.5 is InsightFace's default
/// for SCRFD.
pub const DEFAULT_DETECTION_THRESHOLD: f32 = 0.5;
/// IoU above which overlapping boxes are merged, for a pack whose manifest names none. 0.4 is
/// InsightFace's default.
pub const DEFAULT_NMS_IOU: f32 = 0.4;
/// ONNX Runtime intra-op threads per session: 1, because parallelism comes from the workers.
pub const DEFAULT_INTRA_THREADS: usize = 1;

/// Session sets when none is configured: one per core keeps every core busy without
/// oversubscribing. 1 where the count is unknown.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How the engine is set up. Every field has a default fit for a small server.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// ONNX Runtime shared library (`libonnxruntime.so`), loaded at run time.
    pub runtime_library: PathBuf,
    /// Model pack directory holding `manifest.toml` and the files it names.
    pub model_dir: PathBuf,
    /// Longest side the detector sees; larger images are scaled down, smaller ones never up,
    /// and the network input is rounded up to a multiple of 32.
    pub max_detector_side: u32,
    /// Minimum detector score; the pack's own (`detector.threshold`) when `None`.
    pub detection_threshold: Option<f32>,
    /// IoU above which overlapping boxes are merged; the pack's own when `None`.
    pub nms_iou: Option<f32>,
    /// Largest decoded image, width × height.
    pub max_pixels: u64,
    /// Largest encoded upload. `facegate serve` sets it to its request body limit, so one
    /// setting governs both.
    pub max_input_bytes: usize,
    /// Session sets in the pool, i.e. images analysed at once. Defaults to the CPU count.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session. 1 by default, because parallelism comes from
    /// workers; the server uses 2 so that a lone request gets two cores.
    pub intra_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::with_home(Path::new(DEFAULT_HOME))
    }
}

impl EngineConfig {
    /// Defaults with the runtime and the default pack under `home` (what `scripts/setup`
    /// fills, `.facegate` unless `FACEGATE_HOME` says otherwise).
    pub fn with_home(home: &Path) -> Self {
        Self {
            runtime_library: home.join("onnxruntime").join("libonnxruntime.so"),
            model_dir: pack_dir(home, DEFAULT_PACK),
            max_detector_side: DEFAULT_MAX_DETECTOR_SIDE,
            detection_threshold: None,
            nms_iou: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            workers: default_workers(),
            intra_threads: DEFAULT_INTRA_THREADS,
        }
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits { max_input_bytes: self.max_input_bytes, max_pixels: self.max_pixels }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(EngineError::Config(m.to_owned()));
        if self.max_detector_side < 32 {
            return bad("max_detector_side must be at least 32");
        }
        if self.detection_threshold.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            return bad("detection_threshold must lie in (0, 1]");
        }
        if self.nms_iou.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            return bad("nms_iou must lie in (0, 1]");
        }
        if self.max_pixels == 0 || self.max_input_bytes == 0 {
            return bad("max_pixels and max_input_bytes must be positive");
        }
        if self.intra_threads == 0 {
            return bad("intra_threads must be at least 1");
        }
        Ok(())
    }

    /// The detector's settings: the config's threshold and IoU over the manifest's, over the
    /// defaults.
    pub(crate) fn detector_params(&self, m: &Manifest) -> DetectorParams {
        DetectorParams {
            kind: m.detector.kind,
            channels: m.detector.channels,
            max_side: self.max_detector_side,
            threshold: self.detection_threshold.or(m.detector.threshold).unwrap_or(DEFAULT_DETECTION_THRESHOLD),
            nms_iou: self.nms_iou.or(m.detector.nms_iou).unwrap_or(DEFAULT_NMS_IOU),
            mean: m.detector.mean,
            std: m.detector.std,
            strides: m.detector.strides.clone(),
            anchors_per_cell: m.detector.anchors_per_cell,
            retry_pad: RETRY_PAD,
            retry_fill: RETRY_FILL,
            refine_canvas: m.detector.refine_canvas,
        }
    }
}

/// A recognizer's settings from its manifest table, one face a run until the model's input
/// shape says it takes more (`session::check_recognizer`).
pub(crate) fn recognizer_params(spec: &RecognizerSpec) -> RecognizerParams {
    RecognizerParams {
        mean: spec.mean,
        std: spec.std,
        embedding_size: spec.embedding_size,
        max_batch: 1,
        flip_test: spec.flip_test,
        centre: spec.centre.clone(),
        crop: CropGeometry {
            size: spec.input_size,
            template: spec.template.unwrap_or_else(|| arcface_template(spec.input_size)),
        },
    }
}

/// The landmark model's file and settings, when the pack has one.
pub(crate) fn landmark_params(pack: &Pack) -> Option<(PathBuf, LandmarkParams)> {
    pack.landmarks_path
        .clone()
        .zip(pack.manifest.landmarks.as_ref())
        .map(|(path, spec)| (path, LandmarkParams { input_size: spec.input_size, mean: spec.mean, std: spec.std }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{manifest_calibration, parse_manifest, ChannelOrder, DetectorKind};

    const MANIFEST: &str = r#"
model_id = "test@1"
[detector]
file = "det.onnx"
sha256 = "00"
kind = "yunet"
channels = "bgr"
mean = 0.0
std = 1.0
strides = [8, 16, 32]
anchors_per_cell = 1
threshold = 0.7
refine_canvas = 192
[recognizer]
file = "rec.onnx"
sha256 = "00"
input_size = 112
mean = 127.5
std = 128.0
embedding_size = 128
flip_test = true
[landmarks]
file = "lmk.onnx"
sha256 = "00"
input_size = 192
mean = 0.0
"#;

    fn manifest(text: &str) -> Manifest {
        parse_manifest(text, Path::new("manifest.toml")).expect("valid manifest")
    }

    #[test]
    fn defaults_are_valid_and_point_under_home() {
        let config = EngineConfig::with_home(Path::new("/srv/fg"));
        config.validate().expect("the defaults are valid");
        assert_eq!(config.runtime_library, Path::new("/srv/fg/onnxruntime/libonnxruntime.so"));
        assert_eq!(config.model_dir, Path::new("/srv/fg/models").join(DEFAULT_PACK));
        assert_eq!(config.intra_threads, DEFAULT_INTRA_THREADS);
        assert!(config.workers >= 1);
        let limits = config.decode_limits();
        assert_eq!((limits.max_input_bytes, limits.max_pixels), (DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS));
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let good = EngineConfig::with_home(Path::new("/srv/fg"));
        let bad = [
            EngineConfig { max_detector_side: 31, ..good.clone() },
            EngineConfig { detection_threshold: Some(0.0), ..good.clone() },
            EngineConfig { detection_threshold: Some(1.5), ..good.clone() },
            EngineConfig { detection_threshold: Some(f32::NAN), ..good.clone() },
            EngineConfig { nms_iou: Some(-0.1), ..good.clone() },
            EngineConfig { max_pixels: 0, ..good.clone() },
            EngineConfig { max_input_bytes: 0, ..good.clone() },
            EngineConfig { intra_threads: 0, ..good.clone() },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(EngineError::Config(_))), "{config:?}");
        }
        let edge = EngineConfig { max_detector_side: 32, detection_threshold: Some(1.0), nms_iou: Some(1.0), ..good };
        edge.validate().expect("the edges of each range are valid");
    }

    #[test]
    fn the_config_overrides_the_manifest_which_overrides_the_defaults() {
        let m = manifest(MANIFEST);
        let config = EngineConfig { max_detector_side: 320, ..EngineConfig::with_home(Path::new("/h")) };
        let p = config.detector_params(&m);
        // The manifest names a threshold but no IoU.
        assert_eq!((p.threshold, p.nms_iou), (0.7, DEFAULT_NMS_IOU));
        assert_eq!((p.kind, p.channels, p.max_side), (DetectorKind::Yunet, ChannelOrder::Bgr, 320));
        assert_eq!((p.strides.as_slice(), p.anchors_per_cell, p.refine_canvas), (&[8, 16, 32][..], 1, Some(192)));
        assert_eq!((p.retry_pad, p.retry_fill), (RETRY_PAD, RETRY_FILL));

        let config = EngineConfig { detection_threshold: Some(0.3), nms_iou: Some(0.6), ..config };
        let p = config.detector_params(&m);
        assert_eq!((p.threshold, p.nms_iou), (0.3, 0.6));

        let bare = manifest(&MANIFEST.replace("threshold = 0.7\n", ""));
        let p = EngineConfig::with_home(Path::new("/h")).detector_params(&bare);
        assert_eq!((p.threshold, p.nms_iou), (DEFAULT_DETECTION_THRESHOLD, DEFAULT_NMS_IOU));
    }

    #[test]
    fn recognizer_and_landmark_settings_come_from_the_manifest() {
        let m = manifest(MANIFEST);
        let r = recognizer_params(&m.recognizer);
        assert_eq!((r.crop.size, r.mean, r.std, r.embedding_size), (112, 127.5, 128.0, 128));
        assert_eq!((r.max_batch, r.flip_test), (1, true));
        // Without a template in the manifest, the crop is ArcFace's.
        assert_eq!(r.crop, CropGeometry::arcface(112));

        let path = Path::new("manifest.toml");
        let pack = |manifest: Manifest, landmarks_path: Option<PathBuf>| Pack {
            dir: PathBuf::from("/p"),
            calibration: manifest_calibration(&manifest, path).expect("calibration"),
            manifest,
            detector_path: PathBuf::from("/p/det.onnx"),
            recognizer_path: PathBuf::from("/p/rec.onnx"),
            fused_recognizer_path: None,
            landmarks_path,
        };
        let (file, params) =
            landmark_params(&pack(m.clone(), Some(PathBuf::from("/p/lmk.onnx")))).expect("the pack has landmarks");
        assert_eq!(file, Path::new("/p/lmk.onnx"));
        // `std` is left out of the manifest: the pack's default applies.
        assert_eq!(params, LandmarkParams { input_size: 192, mean: 0.0, std: 1.0 });

        let start = MANIFEST.find("[landmarks]").expect("section");
        assert!(landmark_params(&pack(manifest(&MANIFEST[..start]), None)).is_none());
    }
}
