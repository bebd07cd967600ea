//! facegate's face engine on ONNX Runtime: decode → SCRFD detection → 5-point alignment →
//! ArcFace embedding, and on request the face attributes, behind `facegate_core::Engine`.
//!
//! ```no_run
//! use facegate_core::{AnalyzeOptions, Engine};
//! use facegate_engine::{EngineConfig, OrtEngine};
//!
//! let engine = OrtEngine::load(&EngineConfig::default())?;
//! let analysis = engine.analyze(&std::fs::read("photo.jpg")?, AnalyzeOptions::default())?;
//! println!("{} faces", analysis.faces.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each stage feeds the next: the detections are aligned once ([`AlignedFace`]), and that crop
//! is what the recognizer embeds and what the quality of the attributes (pose, quality, head
//! area; see [`attributes`]) is measured on. Attributes are made only when
//! [`AnalyzeOptions::attributes`] asks for them.
//!
//! Inference runs on a pool of `workers` session sets (one detector and one recognizer each,
//! single-threaded by default): `ort` sessions need `&mut` to run, and on a small machine N
//! independent single-threaded sessions serve N concurrent requests better than one session
//! with N intra-op threads.

pub mod align;
pub mod attributes;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod error;
pub mod pack;
pub mod refine;

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

use facegate_core::{AnalyzeOptions, AnalyzedFace, DetectedFace, ImageAnalysis, ModelInfo};
use image::RgbImage;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

pub use crate::align::AlignedFace;
pub use crate::attributes::{FaceDiagnostics, MeasuredAttributes, QualityParts, DEFAULT_MIN_QUALITY};
pub use crate::decode::{decode_image, DecodeLimits, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS};
pub use crate::detect::{Detection, PadFill};
pub use crate::error::{EngineError, Result};
pub use crate::pack::{list_packs, Manifest, Pack, PackListing};

/// The detector's crate-private canvas fill (`norm` is mean, std), for the `fuzz/` targets only.
#[doc(hidden)]
pub fn fuzz_fill_canvas(content: &[u8], canvas: &detect::Canvas, fill: PadFill, norm: [f32; 2], out: &mut Vec<f32>) {
    detect::fill_canvas(content, canvas, fill, pack::ChannelOrder::Rgb, norm[0], norm[1], out)
}

use crate::attributes::LandmarkParams;
use crate::detect::{DetectScratch, DetectorParams, OutputMap};
use crate::embed::RecognizerParams;
use facegate_core::telemetry::{stage, time_stage};

/// The pack used when none is named: the licence-clean yunet_sface (MIT and Apache-2.0 weights),
/// so that a fresh install may go to production as it is. buffalo_s, whose weights are for
/// non-commercial research only (`serve` warns at start), stays available by name; it is a little
/// more accurate on LFW (99.63 % against 99.50 % 5-fold on `pairs_dev.txt`, inside the folds'
/// spread, but 0.31 % against 1.24 % of genuine pairs missed at score 7000) and a little slower
/// (docs/accuracy.md, "The licence-clean pack").
pub const DEFAULT_PACK: &str = "yunet_sface";

/// Where `scripts/setup` puts the pack called `name` under `home`.
pub fn pack_dir(home: &Path, name: &str) -> PathBuf {
    home.join("models").join(name)
}

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

    fn validate(&self) -> Result<()> {
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
}

/// One detector and one recognizer session with their scratch buffers, and the landmark session,
/// made on the worker's first attributes request so that loading and analyses without attributes
/// never pay for it.
struct Worker {
    detector: Session,
    recognizer: Session,
    landmarks: Option<Session>,
    detect_scratch: DetectScratch,
    embed_input: Vec<f32>,
    landmark_input: Vec<f32>,
}

/// Workers waiting to be leased. Blocking is fine: callers run on blocking threads, and the
/// core's `InferencePool` already bounds how many wait.
struct Pool {
    idle: Mutex<Vec<Worker>>,
    returned: Condvar,
}

struct Lease<'a> {
    pool: &'a Pool,
    worker: Option<Worker>,
}

impl Pool {
    fn lease(&self) -> Lease<'_> {
        // A panic while leasing cannot leave the Vec half-updated, so poisoning is ignored.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(worker) = idle.pop() {
                return Lease { pool: self, worker: Some(worker) };
            }
            idle = self.returned.wait(idle).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Lease<'_> {
    /// Present from `lease` until drop.
    fn get(&mut self) -> Result<&mut Worker> {
        self.worker.as_mut().ok_or_else(|| EngineError::Runtime("worker lease is empty".into()))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(worker);
            self.pool.returned.notify_one();
        }
    }
}

/// The ONNX Runtime engine. Cheap to share (`Arc<OrtEngine>`); all methods take `&self`.
pub struct OrtEngine {
    info: ModelInfo,
    pack: Pack,
    config: EngineConfig,
    limits: DecodeLimits,
    detector: DetectorParams,
    detector_outputs: OutputMap,
    recognizer: RecognizerParams,
    /// The landmark model's file and settings, when the pack has one.
    landmarks: Option<(PathBuf, LandmarkParams)>,
    env: Environment,
    pool: Pool,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").field("model_id", &self.info.model_id).field("config", &self.config).finish()
    }
}

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process and `ort`
/// refuses a second `build()` even after the first is dropped, so it is created on first use
/// and kept. A failed attempt (e.g. a wrong library path) leaves it unset for a later retry.
fn environment(runtime_library: &Path) -> Result<Environment> {
    static ENV: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);
    let mut env = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((first, env)) = env.as_ref() {
        if first != runtime_library {
            tracing::warn!(
                loaded = %first.display(),
                requested = %runtime_library.display(),
                "ONNX Runtime is already loaded in this process; keeping the first library"
            );
        }
        return Ok(env.clone());
    }
    let built = ort::init_from(runtime_library)
        .map_err(|e| EngineError::Runtime(format!("cannot load {}: {e}", runtime_library.display())))?
        .with_name("facegate")
        .with_telemetry(false)
        .build()?;
    *env = Some((runtime_library.to_path_buf(), built.clone()));
    Ok(built)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path))
}

fn session(env: &Environment, path: &Path, config: &EngineConfig, quiet: bool, fixed_shapes: bool) -> Result<Session> {
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(config.intra_threads)?
        // Idle pool threads sleep instead of spinning: with several workers on few cores a
        // spinning thread steals the core another worker's inference needs.
        .with_intra_op_spinning(false)?
        .with_inter_threads(1)?
        // The detector's input size changes with every image; memory patterns are planned per
        // shape and only pay off when shapes repeat.
        .with_memory_pattern(fixed_shapes)?
        // With `ort`'s tracing bridge the environment logs everything, so each session sets its
        // own floor. ArcFace exports declare a batch of 1 in their output shape and ONNX Runtime
        // warns on every batched run; the recognizer's shape is checked at load instead.
        .with_log_level(if quiet { LogLevel::Error } else { LogLevel::Warning })?;
    builder.commit_from_file(path).map_err(|e| EngineError::Runtime(format!("cannot load {}: {e}", path.display())))
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

        let detector = DetectorParams {
            kind: m.detector.kind,
            channels: m.detector.channels,
            max_side: config.max_detector_side,
            threshold: config.detection_threshold.or(m.detector.threshold).unwrap_or(DEFAULT_DETECTION_THRESHOLD),
            nms_iou: config.nms_iou.or(m.detector.nms_iou).unwrap_or(DEFAULT_NMS_IOU),
            mean: m.detector.mean,
            std: m.detector.std,
            strides: m.detector.strides.clone(),
            anchors_per_cell: m.detector.anchors_per_cell,
            retry_pad: RETRY_PAD,
            retry_fill: RETRY_FILL,
            refine_canvas: m.detector.refine_canvas,
        };
        let mut recognizer = RecognizerParams {
            input_size: m.recognizer.input_size,
            mean: m.recognizer.mean,
            std: m.recognizer.std,
            embedding_size: m.recognizer.embedding_size,
            max_batch: 1,
            flip_test: m.recognizer.flip_test,
        };

        let workers = config.workers.max(1);
        let mut sessions = Vec::with_capacity(workers);
        for _ in 0..workers {
            let det = session(&env, &pack.detector_path, config, false, false)?;
            let rec = session(&env, &pack.recognizer_path, config, true, true)?;
            sessions.push((det, rec));
        }
        let (det, rec) = sessions.first().ok_or_else(|| EngineError::Config("no workers".into()))?;
        let names: Vec<&str> = det.outputs().iter().map(|o| o.name()).collect();
        let detector_outputs = OutputMap::new(detector.kind, &names, &detector.strides, &pack.manifest.detector.file)?;
        recognizer.max_batch = check_recognizer(rec, &recognizer, &pack.manifest.recognizer.file)?;

        let pool = Pool {
            idle: Mutex::new(
                sessions
                    .into_iter()
                    .map(|(detector, recognizer)| Worker {
                        detector,
                        recognizer,
                        landmarks: None,
                        detect_scratch: DetectScratch::default(),
                        embed_input: Vec::new(),
                        landmark_input: Vec::new(),
                    })
                    .collect(),
            ),
            returned: Condvar::new(),
        };
        let info = ModelInfo {
            model_id: m.model_id.clone(),
            embedding_size: m.recognizer.embedding_size,
            calibration: pack.calibration.clone(),
        };
        let landmarks =
            pack.landmarks_path.clone().zip(m.landmarks.as_ref()).map(|(path, spec)| {
                (path, LandmarkParams { input_size: spec.input_size, mean: spec.mean, std: spec.std })
            });
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
        faces.iter().map(|d| AlignedFace::new(img, d.clone(), self.recognizer.input_size)).collect()
    }

    /// Embeds aligned faces in one batch; L2-normalised, in order.
    pub fn embed(&self, faces: &[AlignedFace]) -> Result<Vec<Vec<f32>>> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let mut lease = self.pool.lease();
        let w = lease.get()?;
        embed::embed(&mut w.recognizer, &self.recognizer, &mut w.embed_input, faces)
    }

    /// Aligns and embeds the given faces of `img` in one batch; L2-normalised, in order.
    pub fn embed_faces(&self, img: &RgbImage, faces: &[Detection]) -> Result<Vec<Vec<f32>>> {
        self.embed(&self.align(img, faces))
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
            slot @ None => slot.insert(session(&self.env, path, &self.config, false, true)?),
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
        let aligned: Vec<AlignedFace> = time_stage(stage::ALIGN, || {
            dets.into_iter().map(|d| AlignedFace::new(img, d, self.recognizer.input_size)).collect()
        });
        let embeddings = if aligned.is_empty() {
            Vec::new()
        } else {
            time_stage(stage::EMBED, || {
                embed::embed(&mut w.recognizer, &self.recognizer, &mut w.embed_input, &aligned)
            })?
        };
        let attributes_started = std::time::Instant::now();
        let points = if options.attributes && !aligned.is_empty() { self.landmarks(w, img, &aligned)? } else { None };
        drop(lease);
        let measured = if options.attributes { measure(img, &aligned, points) } else { Vec::new() };
        if options.attributes {
            metrics::histogram!(facegate_core::telemetry::INFERENCE_STAGE, "stage" => stage::ATTRIBUTES)
                .record(attributes_started.elapsed().as_secs_f64());
        }
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
        Ok(EngineAnalysis { analysis: ImageAnalysis { width: img.width(), height: img.height(), faces }, diagnostics })
    }

    /// Decodes encoded image bytes and analyses them as [`OrtEngine::analyze_image`].
    pub fn analyze_bytes(&self, bytes: &[u8], options: AnalyzeOptions) -> Result<EngineAnalysis> {
        let img = time_stage(stage::DECODE, || decode_image(bytes, &self.limits))?;
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

/// Pose and quality of each face, with its 106 landmarks when the pack has a landmark model.
fn measure(img: &RgbImage, faces: &[AlignedFace], points: Option<Vec<Vec<[f32; 2]>>>) -> Vec<MeasuredAttributes> {
    match points {
        Some(points) => faces.iter().zip(points).map(|(f, p)| attributes::compute(img, f, Some(p))).collect(),
        None => faces.iter().map(|f| attributes::compute(img, f, None)).collect(),
    }
}

/// Checks the recognizer's declared shapes against the manifest and returns the batch size to
/// use: up to 32 faces a run when the batch dimension is dynamic (a group photo in one call),
/// 1 when it is fixed.
fn check_recognizer(session: &Session, params: &RecognizerParams, file: &str) -> Result<usize> {
    let bad = |reason: String| EngineError::Model { model: file.to_owned(), reason };
    let [input] = session.inputs() else {
        return Err(bad(format!("expected one input, got {}", session.inputs().len())));
    };
    let shape = input.dtype().tensor_shape().ok_or_else(|| bad("input is not a tensor".into()))?;
    let size = i64::from(params.input_size);
    let dims: &[i64] = shape;
    match dims {
        [batch, c, h, w] if (*c == 3 || *c < 0) && (*h == size || *h < 0) && (*w == size || *w < 0) => {
            Ok(if *batch < 0 { 32 } else { 1 })
        }
        other => Err(bad(format!("input shape {other:?} does not fit a {size}×{size} RGB crop"))),
    }
    .and_then(|batch| {
        let out = session.outputs().first().ok_or_else(|| bad("no output".into()))?;
        match out.dtype().tensor_shape().map(|s| s.last().copied()) {
            Some(Some(d)) if d > 0 && d as usize != params.embedding_size => Err(bad(format!(
                "output has {d} values per face; the manifest says embedding_size = {}",
                params.embedding_size
            ))),
            _ => Ok(batch),
        }
    })
}

impl facegate_core::Engine for OrtEngine {
    fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    fn analyze(&self, image: &[u8], options: AnalyzeOptions) -> facegate_core::Result<ImageAnalysis> {
        Ok(self.analyze_bytes(image, options)?.analysis)
    }
}
