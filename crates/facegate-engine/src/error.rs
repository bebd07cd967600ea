use std::path::PathBuf;

/// Everything that can go wrong in the engine: at load time (missing files, bad manifest,
/// runtime errors) and per image (bad input, inference failure).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file the engine needs is absent. Said loudly, with the path and the fix, because the
    /// runtime and the models are fetched separately from the source tree.
    #[error("{what} not found at {}: run `make setup` (scripts/setup) to fetch it", path.display())]
    Missing { what: &'static str, path: PathBuf },
    #[error("SHA-256 mismatch for {}: expected {expected}, got {actual}", path.display())]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("invalid model manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A model answered with outputs of an unexpected shape: a pack that does not fit the code.
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("{0}")]
    InvalidImage(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl<R> From<ort::Error<R>> for EngineError {
    fn from(e: ort::Error<R>) -> Self {
        EngineError::Runtime(e.to_string())
    }
}

impl From<EngineError> for facegate_core::Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::TooLarge(m) => facegate_core::Error::TooLarge(m),
            EngineError::UnsupportedImage(m) => facegate_core::Error::UnsupportedImage(m),
            EngineError::InvalidImage(m) => facegate_core::Error::InvalidImage(m),
            other @ (EngineError::Missing { .. }
            | EngineError::HashMismatch { .. }
            | EngineError::Manifest { .. }
            | EngineError::Io { .. }
            | EngineError::Config(_)
            | EngineError::Runtime(_)
            | EngineError::Model { .. }) => facegate_core::Error::Engine(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facegate_core::Code;

    #[test]
    fn bad_input_maps_to_client_errors_and_the_rest_to_internal() {
        let core: facegate_core::Error = EngineError::TooLarge("big".into()).into();
        assert_eq!(core.code(), Code::PayloadTooLarge);
        let core: facegate_core::Error = EngineError::UnsupportedImage("gif".into()).into();
        assert_eq!(core.code(), Code::UnsupportedMediaType);
        let core: facegate_core::Error = EngineError::InvalidImage("truncated".into()).into();
        assert_eq!(core.code(), Code::InvalidImage);
        let core: facegate_core::Error = EngineError::Runtime("boom".into()).into();
        assert_eq!(core.code(), Code::Internal);
    }

    #[test]
    fn missing_file_names_the_path_and_the_fix() {
        let e = EngineError::Missing { what: "model file", path: PathBuf::from("/x/y.onnx") };
        let text = e.to_string();
        assert!(text.contains("/x/y.onnx"), "{text}");
        assert!(text.contains("make setup"), "{text}");
    }
}
