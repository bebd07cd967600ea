-- Schema v13: the faces an opted-in tenant's searches found nobody for (sightings), grouped into
-- unknown people (issue 29). A sighting's template is sealed like a sample's (its own id as the
-- associated data, since it may move between people); its crop is a small JPEG kept in the row,
-- so that secure_delete zeroes it with the row, sealed as well when the directory is encrypted.
CREATE TABLE unknown_people (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_unix_ms INTEGER NOT NULL
);
CREATE INDEX unknown_people_by_tenant ON unknown_people (tenant_id, id);

CREATE TABLE sightings (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    unknown_person_id  TEXT NOT NULL REFERENCES unknown_people(id) ON DELETE CASCADE,
    model_id           TEXT NOT NULL,
    embedding          BLOB NOT NULL,
    embedding_encoding TEXT NOT NULL,
    crop               BLOB NOT NULL,
    -- The face's box in the crop's pixels: a promoted sighting's sample box.
    crop_face_left     REAL NOT NULL,
    crop_face_top      REAL NOT NULL,
    crop_face_right    REAL NOT NULL,
    crop_face_bottom   REAL NOT NULL,
    quality            REAL NOT NULL,
    seen_unix_ms       INTEGER NOT NULL,
    request_id         TEXT NOT NULL
);
CREATE INDEX sightings_by_person ON sightings (unknown_person_id, seen_unix_ms);
-- The retention purge and the template stream read a tenant's sightings by age.
CREATE INDEX sightings_by_tenant_seen ON sightings (tenant_id, seen_unix_ms);

-- The change log (0011), so that the unknown-faces index follows as the gallery's does. A
-- merge, split or purge changes many rows at once; the follower reloads the tenant's sightings
-- once per batch of such changes, however many there are.
CREATE TRIGGER changes_sighting_kept AFTER INSERT ON sightings BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id, sample_id)
    VALUES (NEW.tenant_id, 'sighting_kept', NEW.unknown_person_id, NEW.id);
END;

CREATE TRIGGER changes_sighting_moved AFTER UPDATE OF unknown_person_id ON sightings BEGIN
    INSERT INTO changes (tenant_id, kind) VALUES (NEW.tenant_id, 'unknown_people_changed');
END;

CREATE TRIGGER changes_sighting_removed AFTER DELETE ON sightings BEGIN
    INSERT INTO changes (tenant_id, kind) VALUES (OLD.tenant_id, 'unknown_people_changed');
END;
