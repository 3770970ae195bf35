-- Licenses not revoked that expire within $days days of $now, ranked by how much they were used
-- over the last $usage_days days (calls, then distinct active users, then distinct features
-- used), so the busiest customers are renewed first; an unused one comes last. Read from
-- license_days() (views.sql): whole days from the license rollups, the rest raw.
WITH expiring AS (
    SELECT * FROM expiring_licenses($now, $days)
),
used AS (
    SELECT license_id, sum(calls) AS calls, len(list_distinct(flatten(list(users)))) AS active_users,
           len(list_distinct(flatten(list(features)))) AS features, max(last_seen) AS last_seen
    FROM license_days($now - to_days($usage_days), $now)
    WHERE license_id IN (SELECT license_id FROM expiring)
    GROUP BY license_id
)
SELECT row_number() OVER (ORDER BY coalesce(u.calls, 0) DESC, coalesce(u.active_users, 0) DESC,
                                   coalesce(u.features, 0) DESC, e.expires_at, e.license_id) AS rank,
       e.license_id, e.customer, e.product, e.tier, e.status, e.expires_at,
       CAST(floor(epoch(e.expires_at - $now) / 86400) AS INTEGER) AS days_left,
       coalesce(u.calls, 0)::BIGINT AS calls, coalesce(u.active_users, 0)::BIGINT AS active_users,
       coalesce(u.features, 0)::BIGINT AS features, u.last_seen
FROM expiring e
LEFT JOIN used u USING (license_id)
ORDER BY rank
