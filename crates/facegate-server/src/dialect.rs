//! Which API dialect a request speaks, by its path: it decides the shape of an error body (see
//! `answer`), the label of metrics and authentication failures, and nothing else.
//!
//! This file imports nothing of the dialects, so that both dialects' authentication layers can
//! name themselves here without an arrow back up to the code that renders their bodies.

/// Which wire format an error answer takes, by the route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MiiCloud,
    NecId,
    /// Health probes and unknown routes.
    Generic,
}

impl Dialect {
    pub fn of(path: &str) -> Self {
        // The console's API takes miiCloud's token and answers in its body.
        if path.starts_with("/miicloud") || path.starts_with("/console/api") {
            Dialect::MiiCloud
        } else if path.starts_with("/v1.1") {
            Dialect::NecId
        } else {
            Dialect::Generic
        }
    }

    /// The name metrics label requests with.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::MiiCloud => "miicloud",
            Dialect::NecId => "necid",
            Dialect::Generic => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_follow_the_path_prefix() {
        assert_eq!(Dialect::of("/miicloud/person/x"), Dialect::MiiCloud);
        assert_eq!(Dialect::of("/console/api/people"), Dialect::MiiCloud);
        assert_eq!(Dialect::of("/v1.1/subjects"), Dialect::NecId);
        assert_eq!(Dialect::of("/healthz"), Dialect::Generic);
    }
}
