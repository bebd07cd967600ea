-- PostgreSQL schema v1: everything the SQLite schema holds at its version 7, plus the face
-- images themselves (every node must read them) and the change log the nodes keep their
-- in-memory indexes in step with. Later versions only add.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- Only SHA-256 hashes of tokens and API keys are stored. The secret access key is stored as is:
-- verifying an AWS Signature V4 needs the HMAC key itself.
CREATE TABLE tenant_tokens (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);
CREATE INDEX tenant_tokens_tenant ON tenant_tokens(tenant_id);
CREATE TABLE tenant_api_keys (
    api_key_hash  TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL
);
CREATE INDEX tenant_api_keys_tenant ON tenant_api_keys(tenant_id);
CREATE TABLE tenant_access_keys (
    access_key_id      TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    secret_access_key  TEXT NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX tenant_access_keys_tenant ON tenant_access_keys(tenant_id);

-- customer_person_id is NULL for subjects created without one (NEC); NULLs never collide in the
-- UNIQUE constraint. `ordinal` keeps insertion order where SQLite used its rowid.
CREATE TABLE subjects (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    customer_person_id  TEXT,
    first_name          TEXT,
    last_name           TEXT,
    email               TEXT,
    phone               TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (tenant_id, customer_person_id)
);

-- embedding: little-endian f16 (f16le), sealed when the gallery is encrypted (f16le+aes256gcm).
CREATE TABLE face_samples (
    id                  TEXT PRIMARY KEY,
    ordinal             BIGSERIAL NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    subject_id          TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    image_name          TEXT NOT NULL,
    bbox_left           REAL NOT NULL,
    bbox_top            REAL NOT NULL,
    bbox_right          REAL NOT NULL,
    bbox_bottom         REAL NOT NULL,
    detector_score      REAL NOT NULL,
    model_id            TEXT NOT NULL,
    embedding           BYTEA NOT NULL,
    embedding_encoding  TEXT NOT NULL,
    created_at          TEXT NOT NULL
);
CREATE INDEX face_samples_subject ON face_samples(tenant_id, subject_id);
CREATE INDEX face_samples_model ON face_samples(model_id, ordinal);

-- The stored face image of each sample, sealed like the template when the gallery is encrypted.
-- path is `<tenant_id>/<image_name>`, as the file's place under SQLite's images/ folder.
CREATE TABLE image_blobs (
    sample_id  TEXT PRIMARY KEY REFERENCES face_samples(id) ON DELETE CASCADE,
    path       TEXT NOT NULL UNIQUE,
    sha256     TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    data       BYTEA NOT NULL
);

-- NEC ID tags, unique per tenant. Subjects carry tag names as labels, so deleting a tag leaves
-- them as they are (NEC ID documents this).
CREATE TABLE tags (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    ordinal     BIGSERIAL NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE subject_tags (
    subject_id  TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    tag         TEXT NOT NULL,
    ordinal     BIGSERIAL NOT NULL,
    PRIMARY KEY (subject_id, tag)
);
CREATE INDEX subject_tags_tenant_tag ON subject_tags(tenant_id, tag);

-- Bulk registration jobs, one record per file. A node claims a record by writing its id and a
-- lease into it; a lease that expires (its node died) lets another node take the record over.
CREATE TABLE bulk_jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);
CREATE INDEX bulk_jobs_tenant ON bulk_jobs(tenant_id, created_at);
CREATE TABLE bulk_records (
    job_id           TEXT NOT NULL REFERENCES bulk_jobs(id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    id               TEXT NOT NULL,
    filename         TEXT NOT NULL,
    tags_json        TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    processed        BOOLEAN NOT NULL DEFAULT FALSE,
    register_status  TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    event_id         TEXT,
    attributes_json  TEXT NOT NULL DEFAULT '',
    claimed_by       TEXT,
    claim_expires    TIMESTAMPTZ,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX bulk_records_pending ON bulk_records(job_id, seq) WHERE NOT processed;

-- Facts about the gallery as a whole, such as the id of the key its data is encrypted under
-- (`encryption_key_id`); no row means none.
CREATE TABLE store_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Every write to the gallery or the tags appends its changes here in the same transaction, in
-- commit order (appends are serialised by an advisory lock), and NOTIFYs `facegate_changes`.
-- Each node applies the changes after the last one it has seen to its in-memory index.
CREATE TABLE changes (
    seq         BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject_id  TEXT,
    sample_id   TEXT,
    old_name    TEXT,
    new_name    TEXT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
