//! The names the change log stores each kind of change under, on both backends.

use facegate_core::ChangeKind;

/// The kind a log row names; `None` for a name from a newer facegate, which this build's index
/// knows nothing to do with.
pub(crate) fn kind_of(name: &str) -> Option<ChangeKind> {
    Some(match name {
        "sample_added" => ChangeKind::SampleAdded,
        "sample_removed" => ChangeKind::SampleRemoved,
        "subject_removed" => ChangeKind::SubjectRemoved,
        "subject_tags_set" => ChangeKind::SubjectTagsSet,
        "tag_renamed" => ChangeKind::TagRenamed,
        "tenant_removed" => ChangeKind::TenantRemoved,
        _ => return None,
    })
}
