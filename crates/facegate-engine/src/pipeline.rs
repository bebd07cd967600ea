//! [`OrtEngine`]: loading a pack onto a pool of session sets, and the pipeline each image goes
//! through on one leased set: decode → detect → refine → align → embed → attributes.

use std::path::{Path, PathBuf};

use facegate_core::telemetry::{stage, time_stage};
use facegate_core::{AnalyzeOptions, AnalyzedFace, BoundingBox, DetectedFace, ImageAnalysis, ModelInfo};
use image::RgbImage;
use ort::environment::Environment;

use crate::align::AlignedFace;
use crate::attributes::{self, FaceDiagnostics, LandmarkParams, MeasuredAttributes};
use crate::config::{landmark_params, recognizer_params, EngineConfig};
use crate::crop;
use crate::decode::{decode_image, DecodeLimits};
use crate::detect::{self, Detection, DetectorParams, OutputMap};
use crate::embed::{self, RecognizerParams};
use crate::error::{EngineError, Result};
use crate::pack::Pack;
use crate::pool::Pool;
use crate::refine;
use crate::session::{check_recognizer, environment, session, Worker};

/// The ONNX Runtime engine. Cheap to share (`Arc<OrtEngine>`); all methods take `&self`.
pub struct OrtEngine {
    info: ModelInfo,
    pack: Pack,
    config: EngineConfig,
    limits: DecodeLimits,
    detector: DetectorParams,
    detector_outputs: OutputMap,
    recognizer: RecognizerParams,
    /// The second recognizer and its weight, when the pack fuses two (`FusedRecognizerSpec`).
    fused: Option<(RecognizerParams, f32)>,
    /// The landmark model's file and settings, when the pack has one.
    landmarks: Option<(PathBuf, LandmarkParams)>,
    env: Environment,
    pool: Pool<Worker>,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").field("model_id", &self.info.model_id).field("config", &self.config).finish()
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path))
}

impl OrtEngine {
    /// Loads the runtime, verifies the pack and builds `config.workers` session sets.
    ///
    /// Errors name the missing or mismatching file; a missing file's message says to run
    /// `make setup`.
    pub fn load(config: &EngineConfig) -> Result<OrtEngine> {
        config.validate()?;
        let runtime = absolute(&config.runtime_library);
        if !runtime.is_file() {
            return Err(EngineError::Missing { what: "ONNX Runtime library", path: runtime });
        }
        let model_dir = absolute(&config.model_dir);
        let pack = Pack::load(&model_dir)?;
        let env = environment(&runtime)?;
        let m = &pack.manifest;

        let detector = config.detector_params(m);
        let mut recognizer = recognizer_params(&m.recognizer);

        let workers = config.workers.max(1);
        let mut sessions = Vec::with_capacity(workers);
        for _ in 0..workers {
            let det = session(&env, &pack.detector_path, config.intra_threads, false, false)?;
            let rec = session(&env, &pack.recognizer_path, config.intra_threads, true, true)?;
            let fused_rec = match &pack.fused_recognizer_path {
                Some(path) => Some(session(&env, path, config.intra_threads, true, true)?),
                None => None,
            };
            sessions.push(Worker::new(det, rec, fused_rec));
        }
        let first = sessions.first().ok_or_else(|| EngineError::Config("no workers".into()))?;
        let names: Vec<&str> = first.detector.outputs().iter().map(|o| o.name()).collect();
        let detector_outputs = OutputMap::new(detector.kind, &names, &detector.strides, &pack.manifest.detector.file)?;
        recognizer.max_batch = check_recognizer(&first.recognizer, &recognizer, &pack.manifest.recognizer.file)?;
        let fused = match (&m.fused_recognizer, &first.fused_recognizer) {
            (Some(spec), Some(session)) => {
                let mut params = recognizer_params(&spec.recognizer);
                params.max_batch = check_recognizer(session, &params, &spec.recognizer.file)?;
                Some((params, spec.weight))
            }
            _ => None,
        };

        let pool = Pool::new(sessions);
        let info = ModelInfo {
            model_id: m.model_id.clone(),
            embedding_size: m.template_size(),
            calibration: pack.calibration.clone(),
        };
        let landmarks = landmark_params(&pack);
        let license = m.license.as_deref().unwrap_or("not stated in the manifest");
        tracing::info!(
            pack = %pack.dir.display(),
            model_id = %info.model_id,
            license,
            workers,
            intra_threads = config.intra_threads,
            "face engine loaded"
        );
        if m.commercial_use == Some(false) {
            tracing::warn!(
                pack = %pack.dir.display(),
                license,
                "this model pack's weights are not licensed for commercial use; see the README's \"Model packs\""
            );
        }
        Ok(OrtEngine {
            landmarks,
            env,
            info,
            limits: config.decode_limits(),
            config: config.clone(),
            pack,
            detector,
            detector_outputs,
            recognizer,
            fused,
            pool,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Detects faces in a decoded image, largest box first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let mut lease = self.pool.lease();
        let w = lease.get()?;
        self.detect_on(w, img, usize::MAX)
    }

    /// Detection on a leased worker, at most `max_faces` kept (largest first).
    fn detect_on(&self, w: &mut Worker, img: &RgbImage, max_faces: usize) -> Result<Vec<Detection>> {
        let mut dets =
            detect::detect(&mut w.detector, &self.detector_outputs, &self.detector, &mut w.detect_scratch, img)?;
        // Before the refinement, which runs the detector once more per face kept.
        dets.truncate(max_faces);
        refine::refine_keypoints(
            &mut w.detector,
            &self.detector_outputs,
            &self.detector,
            &mut w.detect_scratch,
            img,
            &mut dets,
        )?;
        Ok(dets)
    }

    /// Aligns each detection of `img` into the recognizer's crop, in order.
    pub fn align(&self, img: &RgbImage, faces: &[Detection]) -> Vec<AlignedFace> {
        faces.iter().map(|d| self.align_one(img, d.clone())).collect()
    }

    fn align_one(&self, img: &RgbImage, face: Detection) -> AlignedFace {
        AlignedFace::onto(img, face, &self.recognizer.crop)
    }

    /// Aligns and embeds the given faces of `img` in one batch: the pack's unit templates, in
    /// order.
    pub fn embed_faces(&self, img: &RgbImage, faces: &[Detection]) -> Result<Vec<Vec<f32>>> {
        self.embed(img, &self.align(img, faces))
    }

    /// The templates of faces of `img` aligned by [`OrtEngine::align`], in one batch, in order.
    pub fn embed(&self, img: &RgbImage, aligned: &[AlignedFace]) -> Result<Vec<Vec<f32>>> {
        if aligned.is_empty() {
            return Ok(Vec::new());
        }
        let mut lease = self.pool.lease();
        let w = lease.get()?;
        self.embed_on(w, img, aligned)
    }

    /// The templates of faces of `img` already aligned for the first recognizer, on a leased
    /// worker: that recognizer's embeddings, fused with the second one's when the pack has two
    /// (which aligns its own crops, from the same keypoints).
    fn embed_on(&self, w: &mut Worker, img: &RgbImage, aligned: &[AlignedFace]) -> Result<Vec<Vec<f32>>> {
        let first = embed::embed(&mut w.recognizer, &self.recognizer, &mut w.embed_input, aligned)?;
        let Some((params, weight)) = &self.fused else {
            return Ok(first);
        };
        let session = w
            .fused_recognizer
            .as_mut()
            .ok_or_else(|| EngineError::Runtime("a fused pack's worker without its second recognizer".into()))?;
        let crops: Vec<AlignedFace> =
            aligned.iter().map(|a| AlignedFace::onto(img, a.detection.clone(), &params.crop)).collect();
        let second = embed::embed(session, params, &mut w.embed_input, &crops)?;
        embed::fuse(first, second, *weight)
    }

    /// The face attributes of aligned faces of `img`, in order, with the measurements behind
    /// them: one landmark run per face on a pooled worker, then pose and quality (see
    /// [`attributes`]). A pack without a landmark model gets eyes and pose from the detector's
    /// five keypoints instead.
    pub fn attributes(&self, img: &RgbImage, faces: &[AlignedFace]) -> Result<Vec<MeasuredAttributes>> {
        if faces.is_empty() || self.landmarks.is_none() {
            return Ok(measure(img, faces, None));
        }
        let mut lease = self.pool.lease();
        let w = lease.get()?;
        let points = self.landmarks(w, img, faces)?;
        // Pose and quality need no session; let another caller have the worker.
        drop(lease);
        Ok(measure(img, faces, points))
    }

    /// The 106 landmarks of each face on `w`'s landmark session (made on first use); `None`
    /// without a landmark model.
    fn landmarks(&self, w: &mut Worker, img: &RgbImage, faces: &[AlignedFace]) -> Result<Option<Vec<Vec<[f32; 2]>>>> {
        let Some((path, params)) = &self.landmarks else {
            return Ok(None);
        };
        let session = match &mut w.landmarks {
            Some(session) => session,
            slot @ None => slot.insert(session(&self.env, path, self.config.intra_threads, false, true)?),
        };
        let mut points = Vec::with_capacity(faces.len());
        for face in faces {
            points.push(attributes::run_landmarks(session, params, &mut w.landmark_input, img, &face.detection)?);
        }
        Ok(Some(points))
    }

    /// Detection, alignment, embedding and, when `options` asks, attributes of an already
    /// decoded image, on one leased worker. Each stage reads the one before: the crop the
    /// recognizer embeds is the crop the quality is measured on.
    pub fn analyze_image(&self, img: &RgbImage, options: AnalyzeOptions) -> Result<EngineAnalysis> {
        let mut lease = self.pool.lease();
        let w = lease.get()?;
        let dets = time_stage(stage::DETECT, || self.detect_on(w, img, options.max_faces))?;
        let aligned: Vec<AlignedFace> =
            time_stage(stage::ALIGN, || dets.into_iter().map(|d| self.align_one(img, d)).collect());
        let embeddings =
            if aligned.is_empty() { Vec::new() } else { time_stage(stage::EMBED, || self.embed_on(w, img, &aligned))? };
        let attributes_started = std::time::Instant::now();
        let points = if options.attributes && !aligned.is_empty() { self.landmarks(w, img, &aligned)? } else { None };
        drop(lease);
        let measured = if options.attributes { measure(img, &aligned, points) } else { Vec::new() };
        if options.attributes {
            metrics::histogram!(facegate_core::telemetry::INFERENCE_STAGE, "stage" => stage::ATTRIBUTES)
                .record(attributes_started.elapsed().as_secs_f64());
        }
        let (faces, diagnostics) = assemble(aligned, embeddings, measured);
        Ok(EngineAnalysis { analysis: ImageAnalysis { width: img.width(), height: img.height(), faces }, diagnostics })
    }

    /// Decodes encoded image bytes and analyses them as [`OrtEngine::analyze_image`].
    pub fn analyze_bytes(&self, bytes: &[u8], options: AnalyzeOptions) -> Result<EngineAnalysis> {
        let img = decode_upload(bytes, &self.limits)?;
        self.analyze_image(&img, options)
    }
}

/// What [`OrtEngine::analyze_image`] found: the core's analysis, and beside it the measurements
/// behind each face's attributes, one per face in the same order when attributes were asked
/// for (else none).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineAnalysis {
    pub analysis: ImageAnalysis,
    pub diagnostics: Vec<FaceDiagnostics>,
}

/// The decode stage: bad or oversized uploads are refused here, before a worker is leased.
fn decode_upload(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    time_stage(stage::DECODE, || decode_image(bytes, limits))
}

/// Pose and quality of each face, with its 106 landmarks when the pack has a landmark model.
fn measure(img: &RgbImage, faces: &[AlignedFace], points: Option<Vec<Vec<[f32; 2]>>>) -> Vec<MeasuredAttributes> {
    match points {
        Some(points) => faces.iter().zip(points).map(|(f, p)| attributes::compute(img, f, Some(p))).collect(),
        None => faces.iter().map(|f| attributes::compute(img, f, None)).collect(),
    }
}

/// The core's faces from the aligned detections, their embeddings and, when attributes were
/// measured (one per face), those attributes, in detection order; the diagnostics beside them.
fn assemble(
    aligned: Vec<AlignedFace>,
    embeddings: Vec<Vec<f32>>,
    measured: Vec<MeasuredAttributes>,
) -> (Vec<AnalyzedFace>, Vec<FaceDiagnostics>) {
    let (attributes, diagnostics): (Vec<_>, Vec<_>) =
        measured.into_iter().map(|m| (Some(m.attributes), m.diagnostics)).unzip();
    let faces = aligned
        .into_iter()
        .zip(embeddings)
        .zip(attributes.into_iter().chain(std::iter::repeat(None)))
        .map(|((aligned, embedding), attributes)| {
            let d = aligned.detection;
            let face = DetectedFace { bbox: d.bbox, landmarks: d.landmarks, detector_score: d.score, embedding };
            AnalyzedFace { face, attributes }
        })
        .collect();
    (faces, diagnostics)
}

impl facegate_core::Engine for OrtEngine {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn analyze(&self, image: &[u8], options: AnalyzeOptions) -> facegate_core::Result<ImageAnalysis> {
        Ok(self.analyze_bytes(image, options)?.analysis)
    }

    fn face_crops(&self, image: &[u8], boxes: &[BoundingBox]) -> facegate_core::Result<Vec<facegate_core::FaceCrop>> {
        // Decoded with the same limits as `analyze`, so its boxes fall on the same pixels; not
        // timed as the decode stage, which counts the decodes of analyses only.
        crop::face_crops(image, &self.limits, boxes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{LANDMARK_POINTS, LEFT_EYE_106, RIGHT_EYE_106};
    use facegate_core::{BoundingBox, Code, Point};

    fn photo() -> RgbImage {
        RgbImage::from_fn(160, 180, |x, y| {
            image::Rgb([(x * 5 % 256) as u8, (y * 3 % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    /// A face whose box and keypoints are `shift` pixels right of the first one's.
    fn face(img: &RgbImage, shift: f32, score: f32) -> AlignedFace {
        let at = |x: f32, y: f32| [x + shift, y];
        let detection = Detection {
            bbox: BoundingBox { left: 30.0 + shift, top: 40.0, right: 100.0 + shift, bottom: 130.0 },
            landmarks: [at(50.0, 75.0), at(80.0, 74.0), at(65.0, 95.0), at(53.0, 112.0), at(78.0, 111.0)],
            score,
        };
        AlignedFace::new(img, detection, 112)
    }

    fn code(bytes: &[u8], limits: &DecodeLimits) -> Option<Code> {
        decode_upload(bytes, limits).err().map(|e| facegate_core::Error::from(e).code())
    }

    #[test]
    fn bad_uploads_are_refused_with_the_clients_codes_before_inference() {
        let limits = DecodeLimits { max_input_bytes: 64, max_pixels: 100 };
        assert_eq!(code(b"", &limits), Some(Code::InvalidImage));
        assert_eq!(code(b"definitely not an image", &limits), Some(Code::UnsupportedMediaType));
        assert_eq!(code(&[0u8; 65], &limits), Some(Code::PayloadTooLarge));

        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(RgbImage::new(11, 10)).write_to(&mut png, image::ImageFormat::Png).expect("png");
        let png = png.into_inner();
        let roomy = DecodeLimits { max_input_bytes: png.len(), max_pixels: 110 };
        assert_eq!(decode_upload(&png, &roomy).expect("within the limits").dimensions(), (11, 10));
        assert_eq!(code(&png, &DecodeLimits { max_pixels: 109, ..roomy }), Some(Code::PayloadTooLarge));
    }

    #[test]
    fn faces_keep_their_order_embedding_and_attributes() {
        let img = photo();
        let aligned = vec![face(&img, 0.0, 0.9), face(&img, 30.0, 0.6)];
        let embeddings = vec![vec![1.0, 0.0], vec![0.0, 1.0]];

        let (faces, diagnostics) = assemble(aligned.clone(), embeddings.clone(), Vec::new());
        assert!(diagnostics.is_empty());
        assert_eq!(faces.len(), 2);
        for ((f, a), e) in faces.iter().zip(&aligned).zip(&embeddings) {
            assert_eq!(f.face.bbox, a.detection.bbox);
            assert_eq!(f.face.landmarks, a.detection.landmarks);
            assert_eq!(f.face.detector_score, a.detection.score);
            assert_eq!(&f.face.embedding, e);
            assert!(f.attributes.is_none());
        }

        let measured = measure(&img, &aligned, None);
        let (faces, diagnostics) = assemble(aligned, embeddings, measured.clone());
        assert_eq!(diagnostics, measured.iter().map(|m| m.diagnostics.clone()).collect::<Vec<_>>());
        for (f, m) in faces.iter().zip(&measured) {
            assert_eq!(f.attributes.as_ref(), Some(&m.attributes));
        }
        assert_eq!(faces[1].attributes.as_ref().map(|a| a.face_score), Some(0.6));
    }

    #[test]
    fn attributes_come_from_the_106_landmarks_when_there_are_106() {
        let img = photo();
        let faces = vec![face(&img, 0.0, 0.9), face(&img, 30.0, 0.8)];
        assert!(measure(&img, &[], None).is_empty());

        // Without a landmark model, the eyes are the detector's keypoints.
        let from_5 = measure(&img, &faces, None);
        assert_eq!(from_5.len(), 2);
        for (m, f) in from_5.iter().zip(&faces) {
            assert!(m.diagnostics.landmarks106.is_empty());
            let [x, y] = f.detection.landmarks[0];
            assert_eq!(m.attributes.right_eye_center, Point { x: x.round(), y: y.round() });
        }

        let mut points = vec![[60.0, 100.0]; LANDMARK_POINTS];
        RIGHT_EYE_106.iter().for_each(|&i| points[i] = [48.0, 70.0]);
        LEFT_EYE_106.iter().for_each(|&i| points[i] = [84.0, 71.0]);
        let from_106 = measure(&img, &faces[..1], Some(vec![points.clone()]));
        assert_eq!(from_106[0].diagnostics.landmarks106, points);
        assert_eq!(from_106[0].attributes.right_eye_center, Point { x: 48.0, y: 70.0 });
        assert_eq!(from_106[0].attributes.left_eye_center, Point { x: 84.0, y: 71.0 });

        // A landmark model answering with another count is not trusted.
        let short = measure(&img, &faces[..1], Some(vec![points[..100].to_vec()]));
        assert!(short[0].diagnostics.landmarks106.is_empty());
        assert_eq!(short[0].attributes, from_5[0].attributes);
    }
}
