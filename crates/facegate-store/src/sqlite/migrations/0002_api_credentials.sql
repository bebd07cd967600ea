-- Schema v2: NEC ID credentials. The API key (x-api-key) is stored as a SHA-256 hash. The secret
-- access key is stored as is: verifying an AWS Signature V4 needs the HMAC key itself.
CREATE TABLE tenant_api_keys (
    api_key_hash  TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL
);
CREATE INDEX tenant_api_keys_tenant ON tenant_api_keys(tenant_id);

CREATE TABLE tenant_access_keys (
    access_key_id      TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    secret_access_key  TEXT NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX tenant_access_keys_tenant ON tenant_access_keys(tenant_id);
