-- The change log, as PostgreSQL keeps it (postgres/migrations/0001_initial.sql): what each write
-- changed in the index, in commit order. A node's index snapshot records the last change it
-- reflects, and the node brings it up to date from here at start, so that even a node killed
-- with SIGKILL restarts without reading every template.
--
-- Triggers write it rather than each write path, so that no writer is missed: the server, an
-- offline `facegate import` or `reindex`, `tenant delete`, a script filling rows by hand.
-- AUTOINCREMENT: a pruned seq is never handed out again, so positions only grow.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject_id  TEXT,
    sample_id   TEXT,
    old_name    TEXT,
    new_name    TEXT,
    at_unix     INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);
CREATE INDEX changes_at ON changes(at_unix);

CREATE TRIGGER changes_sample_added AFTER INSERT ON face_samples BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id, sample_id)
    VALUES (NEW.tenant_id, 'sample_added', NEW.subject_id, NEW.id);
END;

-- A template replaced in place (`reindex`), or a sample moved: index it again.
CREATE TRIGGER changes_sample_replaced AFTER UPDATE OF embedding, model_id, subject_id ON face_samples BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id, sample_id)
    VALUES (NEW.tenant_id, 'sample_removed', OLD.subject_id, OLD.id);
    INSERT INTO changes (tenant_id, kind, subject_id, sample_id)
    VALUES (NEW.tenant_id, 'sample_added', NEW.subject_id, NEW.id);
END;

-- Also fires for the samples a subject's delete cascades to.
CREATE TRIGGER changes_sample_removed AFTER DELETE ON face_samples BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id, sample_id)
    VALUES (OLD.tenant_id, 'sample_removed', OLD.subject_id, OLD.id);
END;

CREATE TRIGGER changes_subject_removed AFTER DELETE ON subjects BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id) VALUES (OLD.tenant_id, 'subject_removed', OLD.id);
END;

-- A subject's labels: the index reads them anew. A rename's own updates of subject_tags are
-- carried by `tag_renamed`, so updates log nothing here.
CREATE TRIGGER changes_subject_tag_added AFTER INSERT ON subject_tags BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id) VALUES (NEW.tenant_id, 'subject_tags_set', NEW.subject_id);
END;
CREATE TRIGGER changes_subject_tag_removed AFTER DELETE ON subject_tags BEGIN
    INSERT INTO changes (tenant_id, kind, subject_id) VALUES (OLD.tenant_id, 'subject_tags_set', OLD.subject_id);
END;

CREATE TRIGGER changes_tag_renamed AFTER UPDATE OF name ON tags BEGIN
    INSERT INTO changes (tenant_id, kind, old_name, new_name) VALUES (NEW.tenant_id, 'tag_renamed', OLD.name, NEW.name);
END;

-- The tenant's changes go with it, leaving nothing that names it (`tenant delete` runs with no
-- server on the directory, and a starting server drops the index snapshot of a tenant the store
-- no longer has), unlike PostgreSQL, where running nodes need the `tenant_removed` row.
CREATE TRIGGER changes_tenant_removed AFTER DELETE ON tenants BEGIN
    DELETE FROM changes WHERE tenant_id = OLD.id;
END;
