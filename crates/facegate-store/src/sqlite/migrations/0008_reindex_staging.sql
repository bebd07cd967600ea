-- Schema v8: `facegate reindex` stages here what re-embedding each face sample with another model
-- gave, one row per sample and target model: the new box and template, or why it failed. Once
-- every sample has a row, one transaction copies the templates into face_samples and empties
-- the table, so the live templates never change half-way. A sample that is deleted or replaced
-- takes its rows with it. The template is sealed like face_samples' (subject id as AAD).
CREATE TABLE reindex_staging (
    sample_id           TEXT NOT NULL REFERENCES face_samples(id) ON DELETE CASCADE,
    model_id            TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    bbox_left           REAL,
    bbox_top            REAL,
    bbox_right          REAL,
    bbox_bottom         REAL,
    detector_score      REAL,
    embedding           BLOB,
    embedding_encoding  TEXT,
    failure             TEXT,
    PRIMARY KEY (sample_id, model_id),
    CHECK ((embedding IS NULL) <> (failure IS NULL))
);
CREATE INDEX reindex_staging_model ON reindex_staging(model_id, tenant_id);
