-- Schema v4: tag labels on subjects. Plain names, not references, so deleting a tag leaves
-- subjects as they are (NEC ID documents this).
CREATE TABLE subject_tags (
    subject_id  TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (subject_id, tag)
);
CREATE INDEX subject_tags_tenant_tag ON subject_tags(tenant_id, tag);
