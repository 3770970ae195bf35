-- Callers of the port (SPEC §3, §11), shared by every host: scopes as a JSON document, and each
-- key's HMAC secret sealed with AES-256-GCM under keys/registry_seal.key (gateway.registry.seal),
-- never in clear. Every change (gateway.registry.postgres_callers) bumps meta.callers_revision,
-- which every host polls, and notifies portcullis_changes with 'callers', in its transaction.

CREATE TABLE callers (
    caller_id text PRIMARY KEY,
    doc jsonb NOT NULL  -- Caller.to_toml() without key_ids: scopes, mtls_identities, admin, rate_limit_rps
);

CREATE TABLE caller_keys (
    key_id text PRIMARY KEY,
    caller_id text NOT NULL REFERENCES callers,
    sealed bytea NOT NULL,  -- version | seal key id | nonce | AES-GCM(secret), bound to caller_id and key_id
    seq bigint GENERATED ALWAYS AS IDENTITY  -- the order the caller's keys were made in
);
CREATE INDEX caller_keys_by_caller ON caller_keys (caller_id, seq);

INSERT INTO meta VALUES ('callers_revision', 0) ON CONFLICT (key) DO NOTHING;
