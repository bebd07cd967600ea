//! Subject tag rows, read in (tenant, subject) order, handed on one subject at a time: what both
//! backends' `for_each_subject_tags` do with their rows.

/// Collects the tags of consecutive rows of one subject, and visits each subject once.
#[derive(Default)]
pub(crate) struct SubjectTags {
    current: Option<(String, String, Vec<String>)>,
}

impl SubjectTags {
    /// One row; visits the previous subject when this row starts another.
    pub(crate) fn push(
        &mut self,
        tenant_id: String,
        subject_id: String,
        tag: String,
        visit: &mut dyn FnMut(&str, &str, Vec<String>),
    ) {
        match &mut self.current {
            Some((t, s, tags)) if *t == tenant_id && *s == subject_id => tags.push(tag),
            _ => {
                self.finish(visit);
                self.current = Some((tenant_id, subject_id, vec![tag]));
            }
        }
    }

    /// Visits the last subject, after the last row.
    pub(crate) fn finish(&mut self, visit: &mut dyn FnMut(&str, &str, Vec<String>)) {
        if let Some((t, s, tags)) = self.current.take() {
            visit(&t, &s, tags);
        }
    }
}
