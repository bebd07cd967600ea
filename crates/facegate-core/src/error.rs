use std::fmt;

/// The core's error. Every variant maps to exactly one [`Code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("unsupported image format: {0}")]
    UnsupportedImage(String),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("no face found in the image")]
    NoFace,
    #[error("more than one face found in the image")]
    MultipleFaces,
    #[error("face quality is too low: {0}")]
    PoorQuality(String),
    #[error("the server is busy; retry later")]
    Overloaded,
    #[error("storage is full")]
    StorageFull,
    /// Details are logged, never sent to clients.
    #[error("storage error: {0}")]
    Storage(String),
    #[error("inference error: {0}")]
    Engine(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable error names. Each API dialect maps them to its own status and body; the core knows no
/// HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidImage,
    NoFace,
    MultipleFaces,
    PoorQuality,
    Overloaded,
    InsufficientStorage,
    Internal,
}

impl Code {
    /// Every code, for tables that must cover them all.
    pub const ALL: [Code; 12] = [
        Code::InvalidRequest,
        Code::NotFound,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::InvalidImage,
        Code::NoFace,
        Code::MultipleFaces,
        Code::PoorQuality,
        Code::Overloaded,
        Code::InsufficientStorage,
        Code::Internal,
    ];

    /// The code [`Code::name`] names, for a client reading it back off the wire.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidRequest => "InvalidRequest",
            Code::NotFound => "NotFound",
            Code::Conflict => "Conflict",
            Code::PayloadTooLarge => "PayloadTooLarge",
            Code::UnsupportedMediaType => "UnsupportedMediaType",
            Code::InvalidImage => "InvalidImage",
            Code::NoFace => "NoFace",
            Code::MultipleFaces => "MultipleFaces",
            Code::PoorQuality => "PoorQuality",
            Code::Overloaded => "Overloaded",
            Code::InsufficientStorage => "InsufficientStorage",
            Code::Internal => "Internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidRequest(_) => Code::InvalidRequest,
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict(_) => Code::Conflict,
            Error::TooLarge(_) => Code::PayloadTooLarge,
            Error::UnsupportedImage(_) => Code::UnsupportedMediaType,
            Error::InvalidImage(_) => Code::InvalidImage,
            Error::NoFace => Code::NoFace,
            Error::MultipleFaces => Code::MultipleFaces,
            Error::PoorQuality(_) => Code::PoorQuality,
            Error::Overloaded => Code::Overloaded,
            Error::StorageFull => Code::InsufficientStorage,
            Error::Storage(_) | Error::Engine(_) | Error::Internal(_) => Code::Internal,
        }
    }

    /// The message a client may see: internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self.code() {
            Code::Internal => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_read_back_from_its_name() {
        for code in Code::ALL {
            assert_eq!(Code::from_name(code.name()), Some(code));
        }
        assert_eq!(Code::from_name("noface"), None);
        assert_eq!(Code::from_name(""), None);
    }
}
