-- Keys nobody uses and keys that should no longer be used, one row per key, `kind` saying which:
--   stale       active, unexpired license whose key got no allow/alert within $days days
--   never_used  the same, never allowed at all, issued more than $days days ago
--   revoked / expired / unknown
--               "zombie" keys still presented within $days days: the key of a revoked or
--               expired license (in grace or not), or a key no license has. An unknown key counts
--               once presented $min_calls times, so one-off guesses (key probing, reported by
--               `unauthorized`) do not bury the keys left behind in some service's config.
-- Read from key_days() (views.sql): whole days from the license rollups, the rest raw; when each
-- key was last used over the whole history, its zombie presentations per caller over the window.
WITH used AS (
    SELECT key_fp, max(last_used) AS last_used
    FROM key_days(TIMESTAMPTZ '-infinity', $now)
    GROUP BY key_fp
),
by_caller AS (
    SELECT key_fp, caller_id,
           max_by(zombie, last_presented) FILTER (WHERE zombie IS NOT NULL) AS zombie,
           sum(presented) AS presented,
           max(last_presented) AS last_presented
    FROM key_days($now - to_days($days), $now)
    GROUP BY key_fp, caller_id
),
keys AS (
    SELECT key_fp,
           max_by(zombie, last_presented) AS zombie,
           sum(presented)::BIGINT AS presented,
           list(caller_id ORDER BY caller_id) FILTER (WHERE presented > 0 AND caller_id IS NOT NULL) AS callers,
           max(last_presented) AS last_presented
    FROM by_caller
    GROUP BY key_fp
)
SELECT CASE WHEN u.last_used IS NULL THEN 'never_used' ELSE 'stale' END AS kind,
       l.license_id, l.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
       u.last_used AS last_seen, NULL::BIGINT AS presented, NULL::VARCHAR[] AS callers
FROM licenses l
LEFT JOIN used u USING (key_fp)
WHERE l.status = 'active'
  AND (l.expires_at IS NULL OR l.expires_at > $now)
  AND coalesce(u.last_used, l.created_at) < $now - to_days($days)
UNION ALL
SELECT k.zombie, l.license_id, k.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
       k.last_presented, k.presented, k.callers
FROM keys k
LEFT JOIN licenses l USING (key_fp)
WHERE k.zombie IS NOT NULL
  AND (k.zombie <> 'unknown' OR k.presented >= $min_calls)
ORDER BY presented DESC NULLS LAST, last_seen NULLS FIRST, key_fp
