-- PostgreSQL schema v6: the faces an opted-in tenant's searches found nobody for (sightings),
-- grouped into unknown people (issue 29), shared by every node. As SQLite's v13: a sighting's
-- template and crop are sealed with its own id as the associated data when a key is set.
CREATE TABLE unknown_people (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_unix_ms BIGINT NOT NULL
);
CREATE INDEX unknown_people_by_tenant ON unknown_people (tenant_id, id COLLATE "C");

CREATE TABLE sightings (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    unknown_person_id  TEXT NOT NULL REFERENCES unknown_people(id) ON DELETE CASCADE,
    model_id           TEXT NOT NULL,
    embedding          BYTEA NOT NULL,
    embedding_encoding TEXT NOT NULL,
    crop               BYTEA NOT NULL,
    -- The face's box in the crop's pixels: a promoted sighting's sample box.
    crop_face_left     REAL NOT NULL,
    crop_face_top      REAL NOT NULL,
    crop_face_right    REAL NOT NULL,
    crop_face_bottom   REAL NOT NULL,
    quality            REAL NOT NULL,
    seen_unix_ms       BIGINT NOT NULL,
    request_id         TEXT NOT NULL
);
CREATE INDEX sightings_by_person ON sightings (unknown_person_id, seen_unix_ms);
CREATE INDEX sightings_by_tenant_seen ON sightings (tenant_id, seen_unix_ms);
