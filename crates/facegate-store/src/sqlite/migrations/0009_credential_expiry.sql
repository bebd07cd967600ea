-- Schema v9: credentials can expire. `facegate tenant rotate-credentials` gives a tenant new ones
-- and sets its old ones to expire after a grace period, so that its clients can switch over
-- while both work. Unix time in milliseconds; NULL for a credential that does not expire (every
-- current one). The lookups that authenticate a request ignore an expired credential, and the
-- next rotation removes it.
ALTER TABLE tenant_tokens ADD COLUMN expires_unix_ms INTEGER;
ALTER TABLE tenant_api_keys ADD COLUMN expires_unix_ms INTEGER;
ALTER TABLE tenant_access_keys ADD COLUMN expires_unix_ms INTEGER;
