-- Decisions per gateway host over the last $days days: a host is an `instance` without its worker
-- suffix (views.sql: host_of), so the workers of one host count together. Read from summary()
-- (views.sql): whole hours from the rollups, the rest from the raw trail. The dashboard's host
-- filter offers these hosts.
SELECT host, sum(calls)::BIGINT AS decisions, min(hour) AS first_hour, max(hour) AS last_hour
FROM summary($now - to_days($days), $now, $now - to_days($days))
WHERE kind = 'decisions'
GROUP BY host
ORDER BY host
