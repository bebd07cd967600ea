-- Schema v6: templates may be stored as little-endian f16 (half the size of f32, and no
-- measurable change in accuracy: docs/accuracy.md). Rows written before keep their f32 bytes.
ALTER TABLE face_samples ADD COLUMN embedding_encoding TEXT NOT NULL DEFAULT 'f32le';
