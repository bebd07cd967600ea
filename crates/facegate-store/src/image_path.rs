//! The key an image is stored under, `<tenant_id>/<image_name>`, checked: SQLite names its file
//! by it (`<data_dir>/images/<tenant_id>/<image_name>`) and PostgreSQL its `image_blobs` row, so
//! both backends refuse the same names and a backup can be restored on either.

use std::path::{Component, Path};

use crate::error::{Result, StoreError};

/// The validated relative path of an image: `<tenant_id>/<image_name>`.
pub(crate) fn rel_path(tenant_id: &str, image_name: &str) -> Result<String> {
    if !safe_tenant_folder(tenant_id) {
        return Err(StoreError::InvalidImageName(format!("{tenant_id}/{image_name}")));
    }
    if !safe_relative(image_name) {
        return Err(StoreError::InvalidImageName(image_name.to_owned()));
    }
    Ok(format!("{tenant_id}/{image_name}"))
}

/// Whether `tenant_id` is one plain folder name, so that `<tenant_id>/` stays below the images
/// folder.
pub(crate) fn safe_tenant_folder(tenant_id: &str) -> bool {
    !tenant_id.contains('/') && safe_relative(tenant_id)
}

/// A relative `/`-separated path of plain names: no `..`, `.`, empty or hidden components, no
/// leading `/`, no NUL or backslash. Names come from the service; this is defence in depth
/// against one escaping the tenant's folder.
fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\0', '\\'])
        && !name.contains("..")
        && name.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
        && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "../x.jpg",
            "enroll/../../x.jpg",
            "/etc/passwd",
            "enroll/a\0b.jpg",
            "",
            "enroll//x.jpg",
            "enroll/./x.jpg",
            "enroll/.hidden.jpg",
            "enroll\\x.jpg",
            "enroll/",
            "a..b.jpg",
        ] {
            assert!(rel_path("t1", bad).is_err(), "{bad:?} was accepted");
        }
        for bad_tenant in ["", "..", "a/b", ".t", "t\0"] {
            assert!(rel_path(bad_tenant, "enroll/x.jpg").is_err(), "{bad_tenant:?} was accepted");
        }
        assert_eq!(
            rel_path("t1", "enroll/will_smith_001_Fkkx7eK.jpg").expect("ok"),
            "t1/enroll/will_smith_001_Fkkx7eK.jpg"
        );
    }
}
