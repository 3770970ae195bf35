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

-- The registry as last snapshotted by the gateway: key_fp, never keys.
CREATE OR REPLACE VIEW licenses AS SELECT * FROM read_parquet('snapshots/licenses.parquet');

CREATE OR REPLACE VIEW callers AS SELECT * FROM read_parquet('snapshots/callers.parquet');
