-- Licenses not revoked that expire within $days days of $now, soonest first, with how much
-- they are still used: calls and distinct active users over the last 7 days, and when their key
-- was last seen at all. Only the expiring licenses' records are aggregated.
WITH expiring AS (
    SELECT license_id, customer, product, tier, status, expires_at
    FROM licenses
    WHERE status <> 'revoked'
      AND expires_at >= $now
      AND expires_at < $now + to_days($days)
),
seen AS (
    SELECT a.license_id,
           max(a.ts) AS last_seen,
           count(*) FILTER (WHERE a.ts >= $now - INTERVAL 7 DAY) AS calls_7d,
           count(DISTINCT a.user_id) FILTER (WHERE a.ts >= $now - INTERVAL 7 DAY AND a.decision <> 'deny') AS active_users_7d
    FROM audit a
    JOIN expiring e USING (license_id)
    WHERE a.date <= CAST($now AS DATE)
      AND a.ts < $now
    GROUP BY a.license_id
)
SELECT e.license_id, e.customer, e.product, e.tier, e.status, e.expires_at,
       CAST(floor(epoch(e.expires_at - $now) / 86400) AS INTEGER) AS days_left,
       s.last_seen,
       coalesce(s.active_users_7d, 0) AS active_users_7d,
       coalesce(s.calls_7d, 0) AS calls_7d
FROM expiring e
LEFT JOIN seen s USING (license_id)
ORDER BY e.expires_at, e.license_id
