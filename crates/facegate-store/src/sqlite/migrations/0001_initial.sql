-- Schema v1: tenants and their token hashes, subjects, face samples with their templates, and
-- the image files that back the samples. Later versions only add tables, columns and indexes.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- Only SHA-256 hashes of tokens are stored; a tenant may accept several.
CREATE TABLE tenant_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);
CREATE INDEX tenant_tokens_tenant ON tenant_tokens(tenant_id);

-- customer_person_id is NULL for subjects created without one (NEC); SQLite lets any number of
-- NULLs through the UNIQUE constraint.
CREATE TABLE subjects (
    id                  TEXT PRIMARY KEY NOT NULL,
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

-- embedding: little-endian f32, model_id tells which model made it (templates of different
-- models are never compared).
CREATE TABLE face_samples (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    subject_id      TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    image_name      TEXT NOT NULL,
    bbox_left       REAL NOT NULL,
    bbox_top        REAL NOT NULL,
    bbox_right      REAL NOT NULL,
    bbox_bottom     REAL NOT NULL,
    detector_score  REAL NOT NULL,
    model_id        TEXT NOT NULL,
    embedding       BLOB NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX face_samples_subject ON face_samples(tenant_id, subject_id);
CREATE INDEX face_samples_model ON face_samples(model_id);

-- path is relative to the images folder: <tenant_id>/<image_name>.
CREATE TABLE image_blobs (
    sample_id   TEXT PRIMARY KEY NOT NULL REFERENCES face_samples(id) ON DELETE CASCADE,
    path        TEXT NOT NULL UNIQUE,
    sha256      TEXT NOT NULL,
    bytes       INTEGER NOT NULL
);
