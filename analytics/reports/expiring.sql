-- Licenses not revoked that expire within $days days of $now, soonest first, with how much
-- they are still used: calls and distinct active users over the last 7 days, and when their key
-- was last seen at all. Read from license_days() (views.sql): whole days from the license
-- rollups, the rest from the raw trail, and only the expiring licenses' rows are aggregated.
WITH expiring AS (
    SELECT * FROM expiring_licenses($now, $days)
),
ever AS (
    SELECT license_id, max(last_seen) AS last_seen
    FROM license_days(TIMESTAMPTZ '-infinity', $now)
    WHERE license_id IN (SELECT license_id FROM expiring)
    GROUP BY license_id
),
week AS (
    SELECT license_id, sum(calls) AS calls_7d, len(list_distinct(flatten(list(users)))) AS active_users_7d
    FROM license_days($now - INTERVAL 7 DAY, $now)
    WHERE license_id IN (SELECT license_id FROM expiring)
    GROUP BY license_id
)
SELECT e.license_id, e.customer, e.product, e.tier, e.status, e.expires_at,
       CAST(floor(epoch(e.expires_at - $now) / 86400) AS INTEGER) AS days_left,
       s.last_seen,
       coalesce(w.active_users_7d, 0)::BIGINT AS active_users_7d,
       coalesce(w.calls_7d, 0)::BIGINT AS calls_7d
FROM expiring e
LEFT JOIN ever s USING (license_id)
LEFT JOIN week w USING (license_id)
ORDER BY e.expires_at, e.license_id
