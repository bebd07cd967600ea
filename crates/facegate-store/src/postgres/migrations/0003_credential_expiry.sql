-- PostgreSQL schema v3: credentials can expire. `facegate tenant rotate-credentials` gives a
-- tenant new ones and sets its old ones to expire after a grace period, so that its clients can
-- switch over while both work. NULL for a credential that does not expire (every current one).
-- Times are the database's own clock (now()), so nodes whose clocks differ still agree on when
-- a credential stopped working. The lookups that authenticate a request ignore an expired
-- credential, and the next rotation removes it.
ALTER TABLE tenant_tokens ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE tenant_api_keys ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE tenant_access_keys ADD COLUMN expires_at TIMESTAMPTZ;

-- The console lists a tenant's persons page by page in byte order of customer_person_id (the
-- order SQLite's index gives), with an id prefix; this index answers those range scans, which
-- the database's own collation would otherwise turn into a sort of the tenant's every subject.
CREATE INDEX subjects_by_person_id_bytes ON subjects (tenant_id, (customer_person_id COLLATE "C"));
