-- Schema v10: the signatures of accepted NEC ID writes, so that a captured signed request is
-- carried out once, also after a restart. The digest (SHA-256 of the signature) is the primary
-- key: a second insert of it fails however the writes interleave. A row is kept until no server
-- clock could accept the request any more (twice the SigV4 skew window), in Unix milliseconds;
-- each insert prunes a few expired rows, through the index on the expiry.
CREATE TABLE used_signatures (
    digest BLOB PRIMARY KEY,
    expires_unix_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_signatures_by_expiry ON used_signatures (expires_unix_ms);
