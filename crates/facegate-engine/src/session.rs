//! ONNX Runtime sessions: the process's one environment, how each session is built, the
//! recognizer's shape check at load, and the [`Worker`] (one session set) the pool leases.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::detect::DetectScratch;
use crate::embed::RecognizerParams;
use crate::error::{EngineError, Result};

/// One detector and one recognizer session with their scratch buffers, and the landmark session,
/// made on the worker's first attributes request so that loading and analyses without attributes
/// never pay for it.
pub(crate) struct Worker {
    pub(crate) detector: Session,
    pub(crate) recognizer: Session,
    /// The pack's second recognizer, when it fuses two.
    pub(crate) fused_recognizer: Option<Session>,
    pub(crate) landmarks: Option<Session>,
    pub(crate) detect_scratch: DetectScratch,
    pub(crate) embed_input: Vec<f32>,
    pub(crate) landmark_input: Vec<f32>,
}

impl Worker {
    pub(crate) fn new(detector: Session, recognizer: Session, fused_recognizer: Option<Session>) -> Worker {
        Worker {
            detector,
            recognizer,
            fused_recognizer,
            landmarks: None,
            detect_scratch: DetectScratch::default(),
            embed_input: Vec::new(),
            landmark_input: Vec::new(),
        }
    }
}

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process and `ort`
/// refuses a second `build()` even after the first is dropped, so it is created on first use
/// and kept. A failed attempt (e.g. a wrong library path) leaves it unset for a later retry.
pub(crate) fn environment(runtime_library: &Path) -> Result<Environment> {
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

/// A session on the model at `path` with `intra_threads` intra-op threads. `quiet` logs only
/// errors; `fixed_shapes` is for models whose input size never changes.
pub(crate) fn session(
    env: &Environment,
    path: &Path,
    intra_threads: usize,
    quiet: bool,
    fixed_shapes: bool,
) -> Result<Session> {
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(intra_threads)?
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

/// Checks the recognizer's declared shapes against the manifest and returns the batch size to
/// use (see [`recognizer_batch`]).
pub(crate) fn check_recognizer(session: &Session, params: &RecognizerParams, file: &str) -> Result<usize> {
    let bad = |reason: String| EngineError::Model { model: file.to_owned(), reason };
    let [input] = session.inputs() else {
        return Err(bad(format!("expected one input, got {}", session.inputs().len())));
    };
    let shape = input.dtype().tensor_shape().ok_or_else(|| bad("input is not a tensor".into()))?;
    let batch = recognizer_batch(shape, params, file)?;
    let out = session.outputs().first().ok_or_else(|| bad("no output".into()))?;
    check_embedding_width(out.dtype().tensor_shape().and_then(|s| s.last().copied()), params, file)?;
    Ok(batch)
}

/// The batch size for a recognizer whose input is `dims` (negative: dynamic): up to 32 faces a
/// run when the batch dimension is dynamic (a group photo in one call), 1 when it is fixed.
fn recognizer_batch(dims: &[i64], params: &RecognizerParams, file: &str) -> Result<usize> {
    let size = i64::from(params.crop.size);
    match dims {
        [batch, c, h, w] if (*c == 3 || *c < 0) && (*h == size || *h < 0) && (*w == size || *w < 0) => {
            Ok(if *batch < 0 { 32 } else { 1 })
        }
        other => Err(EngineError::Model {
            model: file.to_owned(),
            reason: format!("input shape {other:?} does not fit a {size}×{size} RGB crop"),
        }),
    }
}

/// Refuses a recognizer whose output's last dimension, when declared, is not the manifest's
/// embedding size.
fn check_embedding_width(last: Option<i64>, params: &RecognizerParams, file: &str) -> Result<()> {
    match last {
        Some(d) if d > 0 && d as usize != params.embedding_size => Err(EngineError::Model {
            model: file.to_owned(),
            reason: format!(
                "output has {d} values per face; the manifest says embedding_size = {}",
                params.embedding_size
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RecognizerParams {
        RecognizerParams {
            mean: 127.5,
            std: 127.5,
            embedding_size: 512,
            max_batch: 1,
            flip_test: false,
            centre: None,
            crop: crate::align::CropGeometry::arcface(112),
        }
    }

    #[test]
    fn a_dynamic_batch_dimension_takes_many_faces_a_run() {
        let p = params();
        assert_eq!(recognizer_batch(&[-1, 3, 112, 112], &p, "rec.onnx").expect("fits"), 32);
        assert_eq!(recognizer_batch(&[1, 3, 112, 112], &p, "rec.onnx").expect("fits"), 1);
        // Dynamic channels and sides fit any crop.
        assert_eq!(recognizer_batch(&[-1, -1, -1, -1], &p, "rec.onnx").expect("fits"), 32);
    }

    #[test]
    fn a_recognizer_of_another_shape_is_refused_by_name() {
        let p = params();
        for dims in [&[1, 3, 128, 128][..], &[1, 1, 112, 112], &[1, 112, 112, 3], &[3, 112, 112]] {
            match recognizer_batch(dims, &p, "rec.onnx") {
                Err(EngineError::Model { model, reason }) => {
                    assert_eq!(model, "rec.onnx");
                    assert!(reason.contains("112×112"), "{reason}");
                }
                other => panic!("{dims:?}: {other:?}"),
            }
        }
        check_embedding_width(Some(512), &p, "rec.onnx").expect("the manifest's width");
        // Undeclared widths are checked on the first run instead.
        check_embedding_width(Some(-1), &p, "rec.onnx").expect("dynamic");
        check_embedding_width(None, &p, "rec.onnx").expect("unknown");
        let e = check_embedding_width(Some(128), &p, "rec.onnx").expect_err("wrong width");
        assert!(e.to_string().contains("embedding_size = 512"), "{e}");
    }
}
