-- PostgreSQL schema v5: a tenant's opt-in to keeping the faces its searches find nobody for
-- (issue 29), shared by every node. NULL, the default and every existing tenant's value, keeps
-- none; otherwise how many seconds a kept face lives.
ALTER TABLE tenants ADD COLUMN unknown_faces_retention_secs BIGINT
    CHECK (unknown_faces_retention_secs IS NULL OR unknown_faces_retention_secs > 0);
