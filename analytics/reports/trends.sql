-- Decisions per $bucket ('hour' or 'day', UTC) over the last $days days, by decision and reason.
-- Read from summary() (views.sql): whole hours from the rollups, the rest from the raw trail.
SELECT make_timestamptz(epoch_us(hour) // width * width) AS bucket, decision, reason, sum(calls)::BIGINT AS calls
FROM summary($now - to_days($days), $now, $now - to_days($days)),
     (SELECT CASE $bucket WHEN 'day' THEN 86400000000 ELSE 3600000000 END AS width)
WHERE kind = 'decisions'
GROUP BY ALL
ORDER BY bucket, calls DESC, reason
