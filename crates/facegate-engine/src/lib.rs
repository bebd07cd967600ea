//! facegate's face engine on ONNX Runtime: decode → detection (YuNet or SCRFD, as the model pack
//! says) → 5-point alignment → embedding (SFace or ArcFace), and on request the face attributes,
//! behind `facegate_core::Engine`.
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
//! [`AnalyzeOptions::attributes`](facegate_core::AnalyzeOptions::attributes) asks for them.
//!
//! One module per stage, in the image's order: [`decode`], [`detect`] and [`refine`], [`align`],
//! [`embed`], [`attributes`]. [`pipeline`] runs them on a leased worker (`session.rs`, `pool.rs`),
//! with the settings [`config`] resolves from the engine config and the model [`pack`]. Beside
//! them, [`crop`] cuts the thumbnails of faces kept for a person to look at.
//!
//! Inference runs on a pool of `workers` session sets (one detector and one recognizer each,
//! single-threaded by default): `ort` sessions need `&mut` to run, and on a small machine N
//! independent single-threaded sessions serve N concurrent requests better than one session
//! with N intra-op threads.

pub mod align;
pub mod attributes;
pub mod config;
pub mod crop;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod error;
pub mod pack;
pub mod pipeline;
mod pool;
pub mod refine;
mod session;

pub use crate::align::AlignedFace;
pub use crate::attributes::{FaceDiagnostics, MeasuredAttributes, QualityParts, DEFAULT_MIN_QUALITY};
pub use crate::config::{
    default_workers, EngineConfig, DEFAULT_DETECTION_THRESHOLD, DEFAULT_HOME, DEFAULT_INTRA_THREADS,
    DEFAULT_MAX_DETECTOR_SIDE, DEFAULT_NMS_IOU, DEFAULT_PACK, RETRY_FILL, RETRY_PAD,
};
pub use crate::decode::{decode_image, DecodeLimits, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS};
pub use crate::detect::{Detection, PadFill};
pub use crate::error::{EngineError, Result};
pub use crate::pack::{list_packs, pack_dir, Manifest, Pack, PackListing};
pub use crate::pipeline::{EngineAnalysis, OrtEngine};

/// The detector's crate-private canvas fill (`norm` is mean, std), for the `fuzz/` targets only.
#[doc(hidden)]
pub fn fuzz_fill_canvas(content: &[u8], canvas: &detect::Canvas, fill: PadFill, norm: [f32; 2], out: &mut Vec<f32>) {
    detect::fill_canvas(content, canvas, fill, pack::ChannelOrder::Rgb, norm[0], norm[1], out)
}
