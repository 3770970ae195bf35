-- Decision latency (request received -> decision made, latency_us) per $bucket ('hour' or 'day',
-- UTC) over the last $days days: p50/p95/p99 and max, with the number of decisions.
WITH bucketed AS (
    SELECT epoch_us(ts) // (CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END) AS n,
           latency_us
    FROM audit_window($now - to_days($days), $now)
),
q AS (
    SELECT n, count(*) AS calls,
           quantile_cont(latency_us, [0.5, 0.95, 0.99]) AS p,
           max(latency_us) AS max_us
    FROM bucketed
    GROUP BY n
)
SELECT make_timestamptz(n * (CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END)) AS bucket,
       calls, p[1] AS p50_us, p[2] AS p95_us, p[3] AS p99_us, max_us
FROM q
ORDER BY bucket
