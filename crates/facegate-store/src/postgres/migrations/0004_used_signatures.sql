-- PostgreSQL schema v4: the signatures of accepted NEC ID writes, shared by every node, so that
-- a captured signed request sent to two nodes, or again after a restart, is carried out once.
-- The digest (SHA-256 of the signature) is the primary key: the second node's insert waits for
-- the first's commit and then conflicts. Times are the database's own clock (now()), as for
-- credentials' expiry, so nodes whose clocks differ agree on when a record lapses. A row is
-- kept for twice the SigV4 skew window; each insert prunes a few expired rows, through the
-- index on the expiry.
CREATE TABLE used_signatures (
    digest BYTEA PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX used_signatures_by_expiry ON used_signatures (expires_at);
