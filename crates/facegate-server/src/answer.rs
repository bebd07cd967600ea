//! An error answered in the dialect of a request that no dialect's handler saw: a body that
//! did not arrive in time, axum's own rejections, a path no route owns, a request hyper could not
//! parse. The one place that knows every dialect's error body; the status and codes still come
//! from the one table (`crate::error::wire`).

use axum::response::{IntoResponse, Response};

use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::miicloud::error::MiiError;
use crate::necid::error::NecError;

/// `error` as `dialect` words it.
pub fn in_dialect(dialect: Dialect, error: ApiError) -> Response {
    match dialect {
        Dialect::MiiCloud => MiiError(error).into_response(),
        Dialect::NecId => NecError::Api(error).into_response(),
        Dialect::Generic => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use facegate_core::Error;

    use super::*;
    use crate::auth::AuthError;
    use crate::error::ERROR_CODE_HEADER;

    fn code_of(response: &Response) -> Option<&str> {
        response.headers().get(ERROR_CODE_HEADER).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn every_core_error_names_its_code_in_a_header_in_every_dialect() {
        for dialect in [Dialect::MiiCloud, Dialect::NecId, Dialect::Generic] {
            let no_face = in_dialect(dialect, ApiError::Core(Error::NoFace));
            assert_eq!(code_of(&no_face), Some("NoFace"), "{dialect:?}");
            let blurred = in_dialect(dialect, ApiError::Core(Error::PoorQuality("blurred".into())));
            assert_eq!(code_of(&blurred), Some("PoorQuality"), "{dialect:?}");
            let full = in_dialect(dialect, ApiError::Core(Error::StorageFull));
            assert_eq!(code_of(&full), Some("InsufficientStorage"), "{dialect:?}");
            assert_eq!(code_of(&in_dialect(dialect, ApiError::NoRoute)), None, "not a core error");
            assert_eq!(code_of(&in_dialect(dialect, ApiError::Auth(AuthError::Replayed))), None);
        }
    }
}
