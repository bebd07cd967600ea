//! The change log's rows as both backends read them: each kind of change by the name it is
//! stored under.

use facegate_core::{Change, ChangeKind};

/// One row of the `changes` table, as read.
pub(crate) struct ChangeRow {
    pub seq: u64,
    pub tenant_id: String,
    pub kind: String,
    pub subject_id: Option<String>,
    pub sample_id: Option<String>,
    pub old_name: Option<String>,
    pub new_name: Option<String>,
}

impl ChangeRow {
    /// The change; `None` (logged) for a kind from a newer facegate, which this build's index
    /// knows nothing to do with.
    pub(crate) fn into_change(self) -> Option<Change> {
        let Some(kind) = kind_of(&self.kind) else {
            tracing::warn!(seq = self.seq, kind = self.kind, "skipping a change of an unknown kind");
            return None;
        };
        Some(Change {
            seq: self.seq,
            tenant_id: self.tenant_id,
            kind,
            subject_id: self.subject_id,
            sample_id: self.sample_id,
            old_name: self.old_name,
            new_name: self.new_name,
        })
    }
}

/// The kind a log row names.
fn kind_of(name: &str) -> Option<ChangeKind> {
    Some(match name {
        "sample_added" => ChangeKind::SampleAdded,
        "sample_removed" => ChangeKind::SampleRemoved,
        "subject_removed" => ChangeKind::SubjectRemoved,
        "subject_tags_set" => ChangeKind::SubjectTagsSet,
        "tag_renamed" => ChangeKind::TagRenamed,
        "tenant_removed" => ChangeKind::TenantRemoved,
        "sighting_kept" => ChangeKind::SightingKept,
        "unknown_people_changed" => ChangeKind::UnknownPeopleChanged,
        _ => return None,
    })
}
