-- Schema v5: NEC bulk registration jobs and one record per file. Records keep their own copy
-- of everything the runner needs, so a restarted server resumes from the database alone.
CREATE TABLE bulk_jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);
CREATE TABLE bulk_records (
    job_id           TEXT NOT NULL REFERENCES bulk_jobs(id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    id               TEXT NOT NULL,
    filename         TEXT NOT NULL,
    tags_json        TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    processed        INTEGER NOT NULL DEFAULT 0,
    register_status  TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    event_id         TEXT,
    attributes_json  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
-- The runner's queue: records not yet processed, in job order.
CREATE INDEX bulk_records_pending ON bulk_records(processed, job_id, seq);
