-- Decision latency (request received -> decision made, latency_us) per $bucket ('hour' or 'day',
-- UTC) over the last $days days: p50/p95/p99 and max, with the number of decisions. Read from the
-- latency histograms of summary() (views.sql), so values above 1 ms are within 0.5 %.
WITH histogram AS (
    SELECT epoch_us(hour) // width AS n, latency_us, sum(calls) AS calls, any_value(width) AS width
    FROM summary($now - to_days($days), $now, $now - to_days($days)),
         (SELECT CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END AS width)
    WHERE kind = 'latency'
    GROUP BY n, latency_us
),
ranked AS (
    SELECT n, width, latency_us,
           sum(calls) OVER (PARTITION BY n ORDER BY latency_us) AS upto,
           sum(calls) OVER (PARTITION BY n) AS total
    FROM histogram
)
SELECT make_timestamptz(n * any_value(width)) AS bucket, max(total)::BIGINT AS calls,
       histogram_quantile(latency_us, upto, total, 0.5) AS p50_us,
       histogram_quantile(latency_us, upto, total, 0.95) AS p95_us,
       histogram_quantile(latency_us, upto, total, 0.99) AS p99_us,
       max(latency_us) AS max_us
FROM ranked
GROUP BY n
ORDER BY bucket
