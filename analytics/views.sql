-- Portcullis analytics views (SPEC §6). Paths are relative to the data directory, so the stock
-- DuckDB CLI started there gets the same views as `portcullis sql` and the dashboard:
--
--     cd data && duckdb -init ../analytics/views.sql
--
-- Python code gets them from analytics.db.connect(data_dir), which also copes with an empty
-- data directory and with corrupt audit files (see docs/analytics.md).

SET TimeZone = 'UTC';                -- date=/hour= partitions and report windows are UTC
SET parquet_metadata_cache = true;   -- footers are read once per session, not once per query

-- The audit files the `audit` view reads: a glob, or a list of paths. connect(skip_corrupt=True)
-- narrows it to the readable files; an analyst can do the same with SET VARIABLE.
SET VARIABLE audit_files = 'audit/date=*/hour=*/*.parquet';

-- One row per decision, in the exact audit schema plus the partition columns `date` and `hour`.
-- Filter on `date` (and `hour`) as well as `ts` so whole partitions are skipped.
CREATE OR REPLACE VIEW audit AS
SELECT * FROM read_parquet(
    getvariable('audit_files'),
    hive_partitioning = true,
    hive_types = {'date': DATE, 'hour': INTEGER},
    union_by_name = true
);

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
    CASE WHEN us < 1000 THEN us ELSE round(us, 3 - ceil(log10(us + 1))::INTEGER) END;

-- The start of a timestamp's UTC hour (integer arithmetic: much cheaper than date_trunc).
CREATE OR REPLACE MACRO hour_of(t) AS make_timestamptz(epoch_us(t) // 3600000000 * 3600000000);

-- Per-hour summaries of closed hours, written by `analytics.rollups` (docs/analytics.md,
-- "Rollups"), one file per day. Rows with latency_us NULL count the hour's decisions by
-- decision, reason and http_status; the others are its latency histogram (latency_us a
-- latency_bucket, decision, reason and http_status NULL).
-- Until the first day is summarised there are no files: the typed empty rows give the view its
-- columns then, and the glob picks up files written later.
CREATE OR REPLACE VIEW rollups AS
SELECT date, hour, decision, reason, http_status, latency_us, calls FROM (
    SELECT * FROM read_parquet('rollups/date=*/*.parquet', hive_partitioning = true,
                               hive_types = {'date': DATE}, allow_empty = true)
    UNION ALL BY NAME
    SELECT NULL::DATE AS date, NULL::TIMESTAMPTZ AS hour, NULL::VARCHAR AS decision, NULL::VARCHAR AS reason,
           NULL::SMALLINT AS http_status, NULL::INTEGER AS latency_us, NULL::BIGINT AS calls
    WHERE false
);

-- Every hour before this one is in `rollups` (days are summarised in order, so there are no
-- gaps); later hours are read from `audit`. NULL when there are no rollups.
SET VARIABLE rollups_until = (SELECT max(hour) + INTERVAL 1 HOUR FROM rollups);

-- Whether summary(since, until, split) takes `hour` from `rollups`: a whole hour of the window,
-- not cut by `split`, before rollups_until. Everything else comes from `audit`.
CREATE OR REPLACE MACRO rolled_up(hour, since, until, split) AS
    hour >= since AND hour + INTERVAL 1 HOUR <= until
    AND NOT (hour < split AND hour + INTERVAL 1 HOUR > split)
    AND hour < coalesce(getvariable('rollups_until'), TIMESTAMPTZ '-infinity');

-- The audit records of [since, until) summarised by hour, shaped like `rollups`, each row marked
-- `after_split` (ts >= split; pass split = since when there is nothing to split): whole hours
-- from `rollups`, the rest from `audit`, of which only the days that hold such hours are read.
-- The Overview's reports read this instead of scanning every record of their windows.
CREATE OR REPLACE MACRO summary(since, until, split) AS TABLE
SELECT hour, hour >= split AS after_split, decision, reason, http_status, latency_us, calls
FROM rollups
WHERE date >= CAST(since AS DATE) AND date <= CAST(until AS DATE) AND rolled_up(hour, since, until, split)
UNION ALL
SELECT hour_start AS hour, after_split, decision, reason, http_status, bucket AS latency_us, count(*) AS calls
FROM (
    SELECT hour_of(ts) AS hour_start, ts >= split AS after_split, decision, reason, http_status,
           latency_bucket(latency_us) AS bucket
    FROM audit
    WHERE date >= CAST(since AS DATE) AND date <= CAST(until AS DATE)
      AND (date = CAST(since AS DATE) OR date = CAST(split AS DATE)
           OR date >= CAST(least(until, coalesce(getvariable('rollups_until'), since)) AS DATE))
      AND ts >= since AND ts < until
      AND NOT rolled_up(hour_of(ts), since, until, split)
)
GROUP BY GROUPING SETS ((hour_start, after_split, decision, reason, http_status), (hour_start, after_split, bucket));

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
CREATE OR REPLACE VIEW licenses AS SELECT * FROM read_parquet('snapshots/licenses.parquet');

CREATE OR REPLACE VIEW callers AS SELECT * FROM read_parquet('snapshots/callers.parquet');
