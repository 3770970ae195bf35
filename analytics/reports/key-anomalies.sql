-- License keys used in a way they never were before: the signal of a leaked key. Over the last
-- $hours hours, against the look-back of the $days days before them, one row per finding, `kind`
-- saying which:
--   new_caller   the key presented by a caller it was never presented by in the look-back
--   new_network  the key presented from a remote network (network_of: an IPv4 /24, an IPv6 /64)
--                it was never presented from in the look-back
--   volume       the key's calls in the last $hours hours, per day, at least $factor times its
--                usual daily calls (its look-back calls per day of the look-back) and at least
--                $min_calls calls
-- Only keys seen in the look-back are judged (a new license has no usual). Read from
-- key_sources() (views.sql): whole days from the license rollups, the rest raw.
WITH recent AS (
    SELECT license_id, key_fp, caller_id, network, sum(calls) AS calls, min(first_seen) AS first_seen,
           max(last_seen) AS last_seen
    FROM key_sources($now - to_hours($hours), $now)
    GROUP BY ALL
),
before AS (
    SELECT key_fp, caller_id, network, sum(calls) AS calls
    FROM key_sources($now - to_hours($hours) - to_days($days), $now - to_hours($hours))
    GROUP BY ALL
),
usual AS (
    SELECT key_fp, sum(calls) / $days AS usual_daily, list(DISTINCT caller_id) AS callers,
           list(DISTINCT network) AS networks
    FROM before
    GROUP BY key_fp
),
findings AS (
    SELECT 'new_caller' AS kind, r.license_id, r.key_fp, r.caller_id, NULL AS network, sum(r.calls) AS calls,
           min(r.first_seen) AS first_seen, max(r.last_seen) AS last_seen
    FROM recent r JOIN usual u USING (key_fp)
    WHERE r.caller_id IS NOT NULL AND NOT list_contains(u.callers, r.caller_id)
    GROUP BY ALL
    UNION ALL
    SELECT 'new_network', r.license_id, r.key_fp, NULL, r.network, sum(r.calls), min(r.first_seen), max(r.last_seen)
    FROM recent r JOIN usual u USING (key_fp)
    WHERE NOT list_contains(u.networks, r.network)
    GROUP BY ALL
    UNION ALL
    SELECT 'volume', r.license_id, r.key_fp, NULL, NULL, sum(r.calls), min(r.first_seen), max(r.last_seen)
    FROM recent r JOIN usual u USING (key_fp)
    GROUP BY r.license_id, r.key_fp, u.usual_daily
    HAVING sum(r.calls) >= $min_calls AND sum(r.calls) * 24.0 / $hours >= $factor * u.usual_daily
)
SELECT f.kind, f.license_id, l.customer, f.key_fp, f.caller_id, f.network, f.calls::BIGINT AS calls,
       round(f.calls * 24.0 / $hours, 1) AS calls_per_day, round(u.usual_daily, 1) AS usual_daily,
       f.first_seen, f.last_seen
FROM findings f
JOIN usual u USING (key_fp)
LEFT JOIN licenses l ON l.license_id = f.license_id
ORDER BY f.last_seen DESC, f.kind, f.key_fp, f.caller_id, f.network
