-- Portcullis analytics views (SPEC §6). Paths are relative to the data directory, so the stock
-- DuckDB CLI started there gets the same views as `portcullis sql` and the dashboard:
--
--     cd data && duckdb -init ../analytics/views.sql
--
-- Python code gets them from analytics.db.connect(data_dir), which also copes with an empty
-- data directory and with corrupt audit files (see docs/analytics.md).

SET TimeZone = 'UTC';                -- date=/hour= partitions and report windows are UTC
SET parquet_metadata_cache = true;   -- footers are read once per session, not once per query

-- Where the files are: '' reads them relative to the working directory (the stock CLI started in
-- the data directory). analytics.db.connect sets the data directory's absolute path, ending in
-- '/': a connection confined to some folders (the dashboard's) reads them by the paths it allows,
-- whatever the working directory.
SET VARIABLE data_root = '';

-- Where the audit trail is: the data directory's audit/ unless the `audit_directory` setting puts
-- it elsewhere (a directory several gateway hosts share); analytics.db.connect sets it from that
-- setting, as an absolute path ending in '/'.
SET VARIABLE audit_root = getvariable('data_root') || 'audit/';

-- Which gateway hosts' records the views show: NULL for all of them (the default), or a list of
-- host names, e.g. SET VARIABLE hosts = ['gw1', 'gw2']. A host is an `instance` without its
-- worker suffix (gw1-w0 and gw1-w1 are workers of host gw1). Every report reads through the views,
-- so the same filter narrows all of them (`portcullis report --host`, the dashboard's host filter).
SET VARIABLE hosts = NULL::VARCHAR[];
CREATE OR REPLACE MACRO host_of(instance) AS regexp_replace(instance, '-w[0-9]+$', '');
CREATE OR REPLACE MACRO shown_host(host) AS getvariable('hosts') IS NULL OR list_contains(getvariable('hosts'), host);

-- The audit files the `audit` view reads: a glob, or a list of paths. connect(skip_corrupt=True)
-- narrows it to the readable files; an analyst can do the same with SET VARIABLE.
SET VARIABLE audit_files = getvariable('audit_root') || 'date=*/hour=*/*.parquet';

-- One row per decision of every host (or of the hosts in `hosts`), in the exact audit schema plus
-- the partition columns `date` and `hour`. Filter on `date` (and `hour`) as well as `ts` so whole
-- partitions are skipped.
CREATE OR REPLACE VIEW audit AS
SELECT * FROM read_parquet(
    getvariable('audit_files'),
    hive_partitioning = true,
    hive_types = {'date': DATE, 'hour': INTEGER},
    union_by_name = true
)
WHERE shown_host(host_of(instance));

-- The audit records of [since, until): the ts window plus the matching `date` partitions, so
-- only the files of those days are opened. Every report's time window goes through it.
--     SELECT count(*) FROM audit_window(now() - INTERVAL 1 DAY, now());
CREATE OR REPLACE MACRO audit_window(since, until) AS TABLE
SELECT * FROM audit
WHERE date >= CAST(since AS DATE)
  AND date <= CAST(until AS DATE)
  AND ts >= since
  AND ts < until;

-- Latency as summaries keep it: exact below 1 ms, to three significant digits above (within
-- 0.5 %), so an hour's latency histogram has at most a few thousand rows however busy it was.
CREATE OR REPLACE MACRO latency_bucket(us) AS
    CASE WHEN us < 1000 THEN us::BIGINT ELSE round(us::BIGINT, 3 - ceil(log10(us::BIGINT + 1))::INTEGER) END;

-- The start of a timestamp's UTC hour (integer arithmetic: much cheaper than date_trunc).
CREATE OR REPLACE MACRO hour_of(t) AS make_timestamptz(epoch_us(t) // 3600000000 * 3600000000);

-- Per-hour summaries of closed hours, written by `analytics.rollups` (docs/analytics.md,
-- "Rollups"), one file per day, rows of four kinds:
--   decisions     the hour's decisions counted by decision, reason and http_status
--   latency       the hour's latency histogram: calls per latency_bucket
--   covered       one per day file: the day's hours before `hour` are all summarised
--   unsummarised  an hour of the covered ones left to the raw trail (an audit file unreadable)
-- Decisions and latency rows are per host (`host`), so that the host filter applies to them too.
-- Until the first day is summarised there are no files, and a glob that matches none is an error
-- in the DuckDB 1.5 CLI (2.x's allow_empty is unknown there): so whether there are any is looked
-- up once, when this file runs, and without them the view is typed empty rows. Files written
-- later are picked up by the glob only if some existed then; the coverage below is read once per
-- connection anyway.
SET VARIABLE rollups_source = CASE WHEN (SELECT count(*) FROM glob(getvariable('data_root') || 'rollups/date=*/hours.parquet')) > 0
    THEN format('SELECT * FROM read_parquet(''{}'', hive_partitioning = true, hive_types = {{''date'': DATE}}, '
                'union_by_name = true)', replace(getvariable('data_root') || 'rollups/date=*/hours.parquet', '''', ''''''))
    ELSE 'SELECT NULL::DATE AS date, NULL::VARCHAR AS kind, NULL::TIMESTAMPTZ AS hour, NULL::VARCHAR AS decision,
                 NULL::VARCHAR AS reason, NULL::SMALLINT AS http_status, NULL::BIGINT AS latency_us,
                 NULL::BIGINT AS calls, NULL::VARCHAR AS host WHERE false'
END;
CREATE OR REPLACE VIEW rollups AS
SELECT date, kind, hour, decision, reason, http_status, latency_us, calls, host FROM query(getvariable('rollups_source'));

-- What the rollups cover: every hour from rollups_from to rollups_until except the unsummarised
-- ones; the chain of day files ends at the first day missing or not covered to its end. Read
-- once per connection (NULL when there are no rollups: everything is read raw).
SET VARIABLE rollups_from = (SELECT min(date)::TIMESTAMPTZ FROM rollups WHERE kind = 'covered');
SET VARIABLE rollups_until = (
    SELECT min(hour) FROM (
        SELECT date, hour, lead(date) OVER (ORDER BY date) AS next_date FROM rollups WHERE kind = 'covered')
    WHERE next_date IS NULL OR next_date <> date + 1 OR hour < date + INTERVAL 1 DAY);
SET VARIABLE rollups_unsummarised = (SELECT coalesce(list(hour), []) FROM rollups WHERE kind = 'unsummarised');

-- The audit records of the given days (a list of DATEs): the trail's glob, pruned to those days'
-- folders by the partition filter before any file is opened; a day without files is no error.
-- Binding the `audit` view means reading the schema of every file of the trail (union_by_name),
-- which costs more than the few days summary() reads raw; here only the first file's schema is
-- read, and the columns taken are in every audit file ever written (columns are only appended).
-- Python replaces this macro by one over `audit` when that view is narrowed to a list of files
-- (analytics.db: a file left out, or `connect(files=...)`), has no files, or its first file
-- lacks one of these columns; an analyst who narrows `audit_files` by hand does the same:
--     CREATE OR REPLACE MACRO audit_days(days) AS TABLE
--     SELECT *, host_of(instance) AS host FROM audit WHERE list_contains(days, date);
CREATE OR REPLACE MACRO audit_days(days) AS TABLE
SELECT date, ts, decision, reason, http_status, latency_us, host_of(instance) AS host
FROM read_parquet(getvariable('audit_files'), hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER})
WHERE list_contains(days, date) AND shown_host(host_of(instance));

-- Whether summary(since, until, split) takes `hour` from `rollups`: a whole hour of the window,
-- not cut by `split`, covered by the rollups. Everything else comes from `audit`.
CREATE OR REPLACE MACRO rolled_up(hour, since, until, split) AS
    hour >= since AND hour + INTERVAL 1 HOUR <= until
    AND NOT (hour < split AND hour + INTERVAL 1 HOUR > split)
    AND hour >= coalesce(getvariable('rollups_from'), TIMESTAMPTZ 'infinity')
    AND hour < coalesce(getvariable('rollups_until'), TIMESTAMPTZ '-infinity')
    AND NOT list_contains(coalesce(getvariable('rollups_unsummarised'), []), hour);

-- The audit records of [since, until) summarised by hour and host, as `rollups` rows of kind
-- decisions and latency, each marked `after_split` (ts >= split; pass split = since when there is nothing
-- to split): whole hours the rollups cover from them, the rest from the audit files of the days
-- that can hold such hours (audit_days). The Overview's reports read this instead of every
-- record of their windows.
CREATE OR REPLACE MACRO summary(since, until, split) AS TABLE
SELECT kind, hour, host, hour >= split AS after_split, decision, reason, http_status, latency_us, calls
FROM rollups
WHERE kind IN ('decisions', 'latency') AND date >= CAST(since AS DATE) AND date <= CAST(until AS DATE)
  AND rolled_up(hour, since, until, split) AND shown_host(host)
UNION ALL
SELECT CASE WHEN grouping(bucket) = 1 THEN 'decisions' ELSE 'latency' END AS kind, hour_start AS hour, host,
       after_split, decision, reason, http_status, bucket AS latency_us, count(*) AS calls
FROM (
    SELECT hour_of(ts) AS hour_start, host, ts >= split AS after_split, decision, reason, http_status,
           latency_bucket(latency_us) AS bucket
    FROM audit_days([d::DATE FOR d IN range(CAST(since AS DATE)::TIMESTAMP, CAST(until AS DATE)::TIMESTAMP
                                                  + INTERVAL 1 DAY, INTERVAL 1 DAY)
                     IF d::DATE = CAST(since AS DATE) OR d::DATE = CAST(split AS DATE)
                        OR d::DATE >= CAST(least(until, coalesce(getvariable('rollups_until'), since)) AS DATE)
                        OR d::DATE < CAST(coalesce(getvariable('rollups_from'), since) AS DATE)
                        OR list_contains(coalesce(getvariable('rollups_unsummarised'), [])::DATE[], d::DATE)])
    WHERE ts >= since AND ts < until AND NOT rolled_up(hour_of(ts), since, until, split)
)
GROUP BY GROUPING SETS ((hour_start, host, after_split, decision, reason, http_status), (hour_start, host, after_split, bucket));

-- quantile_cont(value, q) over a histogram: one row per distinct value, `upto` counting the values
-- up to and including it (a running sum in ascending order), `total` all of them; the same
-- interpolation between the two values around rank q * (total - 1).
CREATE OR REPLACE MACRO histogram_quantile(value, upto, total, q) AS
    CAST(min(value) FILTER (WHERE upto > floor(q * (total - 1))) AS DOUBLE)
    + (q * (max(total) - 1) - floor(q * (max(total) - 1)))::DOUBLE
      * (coalesce(min(value) FILTER (WHERE upto > floor(q * (total - 1)) + 1),
                  min(value) FILTER (WHERE upto > floor(q * (total - 1))))
         - min(value) FILTER (WHERE upto > floor(q * (total - 1))));

-- The registry as last snapshotted by the gateway: key_fp, never keys.
CREATE OR REPLACE VIEW licenses AS SELECT * FROM read_parquet(getvariable('data_root') || 'snapshots/licenses.parquet');

CREATE OR REPLACE VIEW callers AS SELECT * FROM read_parquet(getvariable('data_root') || 'snapshots/callers.parquet');

-- Per-license, per-day summaries of whole days, written by `analytics.rollups` beside each day's
-- hours (rollups/date=D/licenses.parquet; docs/analytics.md, "Rollups"), rows of six kinds, each
-- per gateway host:
--   license  a license's day: calls by outcome, first/last seen, the day's distinct user ids and
--            features of allowed/alerted calls (exact lists), its latest seats used and limit
--   feature  a license's feature's day (by the tier the records name): calls, allowed, alerted
--   quota    a license's metered feature's day: its quota counter first and last, the limit
--   source   a key's day per caller and remote network (network_of): calls, first/last seen
--   key      any key's day per caller (licensed or not): last used, zombie presentations
--   covered  one per file: the day is summarised whole (days without a file are read raw)
-- As for `rollups`, whether there are any files is looked up once, when this file runs.
SET VARIABLE license_rollups_source = CASE WHEN (SELECT count(*) FROM glob(getvariable('data_root') || 'rollups/date=*/licenses.parquet')) > 0
    THEN format('SELECT * FROM read_parquet(''{}'', hive_partitioning = true, hive_types = {{''date'': DATE}}, '
                'union_by_name = true)', replace(getvariable('data_root') || 'rollups/date=*/licenses.parquet', '''', ''''''))
    ELSE 'SELECT NULL::DATE AS date, NULL::VARCHAR AS kind, NULL::VARCHAR AS host, NULL::VARCHAR AS license_id,
                 NULL::VARCHAR AS key_fp, NULL::VARCHAR AS feature, NULL::VARCHAR AS caller_id, NULL::VARCHAR AS network,
                 NULL::BIGINT AS calls, NULL::BIGINT AS allowed, NULL::BIGINT AS alerted,
                 NULL::TIMESTAMPTZ AS first_seen, NULL::TIMESTAMPTZ AS last_seen, NULL::VARCHAR[] AS users,
                 NULL::VARCHAR[] AS features, NULL::INTEGER AS seats_used, NULL::INTEGER AS seats_limit,
                 NULL::TIMESTAMPTZ AS seats_at, NULL::BIGINT AS seat_denials, NULL::BIGINT AS seat_overages,
                 NULL::BIGINT AS quota_first, NULL::BIGINT AS quota_used, NULL::BIGINT AS quota_limit,
                 NULL::BIGINT AS quota_alerts, NULL::BIGINT AS quota_denials, NULL::VARCHAR AS customer,
                 NULL::VARCHAR AS tier, NULL::TIMESTAMPTZ AS last_used, NULL::VARCHAR AS zombie,
                 NULL::BIGINT AS presented, NULL::TIMESTAMPTZ AS last_presented WHERE false'
END;
CREATE OR REPLACE VIEW license_rollups AS
SELECT date, kind, host, license_id, key_fp, feature, caller_id, network, calls, allowed, alerted, first_seen,
       last_seen, users, features, seats_used, seats_limit, seats_at, seat_denials, seat_overages, quota_first,
       quota_used, quota_limit, quota_alerts, quota_denials, customer, tier, last_used, zombie, presented,
       last_presented
FROM query(getvariable('license_rollups_source'));

-- The days the license rollups cover, read once per connection.
SET VARIABLE license_days_covered = (SELECT coalesce(list(date), []) FROM license_rollups WHERE kind = 'covered');

-- Whether day d of [since, until) is read from the license rollups: a whole day of the window
-- that they cover. Every other day of the window is read from `audit`, cut to the window.
CREATE OR REPLACE MACRO license_rolled_up(d, since, until) AS
    d::TIMESTAMPTZ >= since AND d::TIMESTAMPTZ + INTERVAL 1 DAY <= until
    AND list_contains(coalesce(getvariable('license_days_covered'), []::DATE[]), d);

-- The records of [since, until) on the days not read from the license rollups, with the
-- columns the license reports take: as audit_days, from the trail's glob pruned by `date` (only
-- the first file's schema read, not every file's as binding `audit` does), and replaced by
-- Python with one over `audit` when audit_days is.
CREATE OR REPLACE MACRO license_raw(since, until) AS TABLE
SELECT date, ts, host_of(instance) AS host, license_id, key_fp, caller_id, remote_addr, user_id, feature, decision,
       reason, seats_used, seats_limit, quota_used, quota_limit, customer, tier
FROM read_parquet(getvariable('audit_files'), hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER})
WHERE date >= CAST(since AS DATE) AND date <= CAST(until AS DATE) AND NOT license_rolled_up(date, since, until)
  AND ts >= since AND ts < until AND shown_host(host_of(instance));

-- A license's remote network: the /24 of an IPv4 address (also IPv4-mapped IPv6), the /64 of an
-- IPv6 one (written in full, '::' expanded), else the address itself.
CREATE OR REPLACE MACRO ipv6_groups(addr) AS
    CASE WHEN contains(addr, '::')
         THEN CASE WHEN split_part(addr, '::', 1) = '' THEN []::VARCHAR[] ELSE string_split(split_part(addr, '::', 1), ':') END
              || list_resize([]::VARCHAR[], 8 - len(string_split(split_part(addr, '::', 1), ':'))
                                              - len(string_split(split_part(addr, '::', 2), ':')), '0')
              || CASE WHEN split_part(addr, '::', 2) = '' THEN []::VARCHAR[] ELSE string_split(split_part(addr, '::', 2), ':') END
         ELSE string_split(addr, ':') END;
CREATE OR REPLACE MACRO network_of(addr) AS
    CASE WHEN regexp_matches(addr, '^(::ffff:)?[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$')
         THEN regexp_extract(addr, '([0-9]+\.[0-9]+\.[0-9]+)\.[0-9]+$', 1) || '.0/24'
         WHEN contains(addr, ':')
         THEN array_to_string(ipv6_groups(lower(split_part(addr, '%', 1)))[1:4], ':') || '::/64'
         ELSE addr END;

-- The license rows of [since, until), one per day, host and license: whole days from the license
-- rollups, the rest from the raw trail. The license reports read this (and the two below)
-- instead of every record of their windows.
CREATE OR REPLACE MACRO license_days(since, until) AS TABLE
SELECT date, host, license_id, key_fp, calls, allowed, alerted, first_seen, last_seen, users, features,
       seats_used, seats_limit, seats_at, seat_denials, seat_overages
FROM license_rollups
WHERE kind = 'license' AND license_rolled_up(date, since, until) AND shown_host(host)
UNION ALL
SELECT date, host, license_id, any_value(key_fp), count(*),
       count(*) FILTER (WHERE decision = 'allow'), count(*) FILTER (WHERE decision = 'alert'),
       min(ts), max(ts),
       coalesce(list(DISTINCT user_id) FILTER (WHERE decision <> 'deny' AND user_id IS NOT NULL), []),
       coalesce(list(DISTINCT feature) FILTER (WHERE decision <> 'deny' AND feature IS NOT NULL), []),
       max_by(seats_used, ts) FILTER (WHERE seats_limit > 0), max_by(seats_limit, ts) FILTER (WHERE seats_limit > 0),
       max(ts) FILTER (WHERE seats_limit > 0),
       count(*) FILTER (WHERE reason = 'SEAT_LIMIT_EXCEEDED'), count(*) FILTER (WHERE reason = 'SEAT_OVERAGE')
FROM license_raw(since, until)
WHERE license_id IS NOT NULL
GROUP BY date, host, license_id;

-- The metered rows of [since, until), one per day, host, license and feature: the quota counter
-- at the day's first and last metered record, the limit then, quota alerts and refusals, and the
-- customer and tier the records name.
CREATE OR REPLACE MACRO quota_days(since, until) AS TABLE
SELECT date, host, license_id, feature, calls, first_seen, last_seen, quota_first, quota_used, quota_limit,
       quota_alerts, quota_denials, customer, tier
FROM license_rollups
WHERE kind = 'quota' AND license_rolled_up(date, since, until) AND shown_host(host)
UNION ALL
SELECT date, host, license_id, feature, count(*), min(ts), max(ts), min_by(quota_used, ts), max_by(quota_used, ts),
       max_by(quota_limit, ts), count(*) FILTER (WHERE reason IN ('QUOTA_NEAR_LIMIT', 'QUOTA_OVERAGE')),
       count(*) FILTER (WHERE reason = 'QUOTA_EXCEEDED'), any_value(customer), any_value(tier)
FROM license_raw(since, until)
WHERE license_id IS NOT NULL AND quota_limit > 0
GROUP BY date, host, license_id, feature;

-- The checks of [since, until) per day, host, license, feature and tier (as the records name
-- them): calls, allowed, alerted.
CREATE OR REPLACE MACRO feature_days(since, until) AS TABLE
SELECT date, host, license_id, feature, tier, calls, allowed, alerted
FROM license_rollups
WHERE kind = 'feature' AND license_rolled_up(date, since, until) AND shown_host(host)
UNION ALL
SELECT date, host, license_id, feature, tier, count(*), count(*) FILTER (WHERE decision = 'allow'),
       count(*) FILTER (WHERE decision = 'alert')
FROM license_raw(since, until)
WHERE license_id IS NOT NULL AND feature IS NOT NULL
GROUP BY date, host, license_id, feature, tier;

-- Every key presented in [since, until), licensed or not, per day, host and caller: when it was
-- last allowed or alerted, and how often it was refused as a "zombie" (`zombie`: revoked, expired,
-- unknown, the day's latest) and when last (`stale-keys`).
CREATE OR REPLACE MACRO key_days(since, until) AS TABLE
SELECT date, host, key_fp, caller_id, last_used, zombie, presented, last_presented
FROM license_rollups
WHERE kind = 'key' AND license_rolled_up(date, since, until) AND shown_host(host)
UNION ALL
SELECT date, host, key_fp, caller_id, max(ts) FILTER (WHERE decision IN ('allow', 'alert')),
       max_by(zombie, ts) FILTER (WHERE zombie IS NOT NULL), count(zombie), max(ts) FILTER (WHERE zombie IS NOT NULL)
FROM (SELECT *, CASE reason WHEN 'LICENSE_REVOKED' THEN 'revoked' WHEN 'KEY_NOT_FOUND' THEN 'unknown'
                            WHEN 'LICENSE_EXPIRED' THEN 'expired' WHEN 'EXPIRED_IN_GRACE' THEN 'expired' END AS zombie
      FROM license_raw(since, until)
      WHERE key_fp IS NOT NULL)
GROUP BY date, host, key_fp, caller_id;

-- Who presented each license key in [since, until), one row per day, host, key, caller and
-- remote network, with calls and first/last seen.
CREATE OR REPLACE MACRO key_sources(since, until) AS TABLE
SELECT date, host, license_id, key_fp, caller_id, network, calls, first_seen, last_seen
FROM license_rollups
WHERE kind = 'source' AND license_rolled_up(date, since, until) AND shown_host(host)
UNION ALL
SELECT date, host, license_id, key_fp, caller_id, network_of(remote_addr), sum(calls), min(first_seen), max(last_seen)
FROM (  -- per address first: network_of once per address, not per record
    SELECT date, host, license_id, key_fp, caller_id, remote_addr, count(*) AS calls, min(ts) AS first_seen,
           max(ts) AS last_seen
    FROM license_raw(since, until)
    WHERE license_id IS NOT NULL AND key_fp IS NOT NULL
    GROUP BY ALL)
GROUP BY ALL;

-- The licenses not revoked that expire within `days` days of `at_time` (`expiring`, `renewals`).
CREATE OR REPLACE MACRO expiring_licenses(at_time, days) AS TABLE
SELECT license_id, customer, product, tier, status, expires_at
FROM licenses
WHERE status <> 'revoked' AND expires_at >= at_time AND expires_at < at_time + to_days(days);
