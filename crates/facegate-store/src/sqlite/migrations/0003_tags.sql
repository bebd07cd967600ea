-- Schema v3: NEC ID tags, unique per tenant. Subjects and events will carry tag names as
-- labels, so deleting a tag leaves them as they are, as NEC ID documents.
CREATE TABLE tags (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
