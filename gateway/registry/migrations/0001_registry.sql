-- The registry shared by several gateway hosts (SPEC §11): the same tables as the SQLite
-- registry, times in µs since the epoch. Applied by gateway.registry.migrate; later files only
-- add (tables, nullable columns, indexes), so hosts still running the previous version keep working.

CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO meta VALUES ('revision', 0);

-- A license as its JSON document plus the columns looked up; rev is the registry revision of its
-- last change (every host pulls licenses with rev > the revision it has).
CREATE TABLE licenses (
    license_id text PRIMARY KEY,
    key_hash text NOT NULL UNIQUE,
    doc text NOT NULL,
    rev bigint NOT NULL,
    created_us bigint NOT NULL,
    updated_us bigint NOT NULL
);
CREATE INDEX licenses_by_rev ON licenses (rev);

-- The moment each license's stored state dates from (gateway.registry.admit_bundle).
CREATE TABLE dated (license_id text PRIMARY KEY, dated_us bigint NOT NULL);

CREATE TABLE seats (
    license_id text NOT NULL, user_id text NOT NULL, last_seen_us bigint NOT NULL,
    PRIMARY KEY (license_id, user_id)
);

CREATE TABLE usage (
    license_id text NOT NULL, quota_key text NOT NULL, period_start_us bigint NOT NULL,
    used bigint NOT NULL,
    PRIMARY KEY (license_id, quota_key, period_start_us)
);

-- The replay window of every host: expires in seconds since the epoch.
CREATE TABLE nonces (nonce text PRIMARY KEY, expires double precision NOT NULL);
CREATE INDEX nonces_by_expiry ON nonces (expires);

-- Signals (gateway.registry.signals): generations, failed-authentication tallies, claims.
CREATE TABLE generations (name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE tallies (
    subject text NOT NULL, window_no bigint NOT NULL, count bigint NOT NULL,
    PRIMARY KEY (subject, window_no)
);
CREATE TABLE claims (key text PRIMARY KEY, at_us bigint NOT NULL);
