-- Decisions per $bucket ('hour' or 'day', UTC) over the last $days days, by decision and reason.
-- Buckets are integer divisions of epoch microseconds: much cheaper than date_trunc on
-- TIMESTAMPTZ, and the same boundaries since the session time zone is UTC.
WITH bucketed AS (
    SELECT epoch_us(ts) // (CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END) AS n,
           decision, reason
    FROM audit_window($now - to_days($days), $now)
)
SELECT make_timestamptz(n * (CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END)) AS bucket,
       decision, reason, count(*) AS calls
FROM bucketed
GROUP BY n, decision, reason
ORDER BY bucket, calls DESC, reason
