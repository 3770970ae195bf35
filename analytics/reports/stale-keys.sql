-- Keys nobody uses and keys that should no longer be used, one row per key, `kind` saying which:
--   stale       active, unexpired license whose key got no allow/alert within $days days
--   never_used  the same, never allowed at all, issued more than $days days ago
--   revoked / expired / unknown
--               "zombie" keys still presented within $days days: the key of a revoked or
--               expired license (in grace or not), or a key no license has. An unknown key counts
--               once presented $min_calls times, so one-off guesses (key probing, reported by
--               `unauthorized`) do not bury the keys left behind in some service's config.
-- One pass over the history: per key and caller first (a small result), then per key.
WITH by_caller AS (
    SELECT key_fp, caller_id,
           max(ts) FILTER (WHERE decision IN ('allow', 'alert')) AS last_used,
           max_by(zombie, ts) FILTER (WHERE zombie IS NOT NULL) AS zombie,
           count(zombie) AS presented,
           max(ts) FILTER (WHERE zombie IS NOT NULL) AS last_presented
    FROM (
        SELECT key_fp, caller_id, ts, decision,
               CASE WHEN ts >= $now - to_days($days) THEN
                   CASE reason WHEN 'LICENSE_REVOKED' THEN 'revoked'
                               WHEN 'KEY_NOT_FOUND' THEN 'unknown'
                               WHEN 'LICENSE_EXPIRED' THEN 'expired'
                               WHEN 'EXPIRED_IN_GRACE' THEN 'expired' END
               END AS zombie
        FROM audit
        WHERE date <= CAST($now AS DATE)
          AND ts < $now
          AND key_fp IS NOT NULL
    )
    GROUP BY key_fp, caller_id
),
keys AS (
    SELECT key_fp,
           max(last_used) AS last_used,
           max_by(zombie, last_presented) AS zombie,
           sum(presented) AS presented,
           list(caller_id ORDER BY caller_id) FILTER (WHERE presented > 0 AND caller_id IS NOT NULL) AS callers,
           max(last_presented) AS last_presented
    FROM by_caller
    GROUP BY key_fp
)
SELECT CASE WHEN k.last_used IS NULL THEN 'never_used' ELSE 'stale' END AS kind,
       l.license_id, l.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
       k.last_used AS last_seen, NULL::BIGINT AS presented, NULL::VARCHAR[] AS callers
FROM licenses l
LEFT JOIN keys k USING (key_fp)
WHERE l.status = 'active'
  AND (l.expires_at IS NULL OR l.expires_at > $now)
  AND coalesce(k.last_used, l.created_at) < $now - to_days($days)
UNION ALL
SELECT k.zombie, l.license_id, k.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
       k.last_presented, k.presented, k.callers
FROM keys k
LEFT JOIN licenses l USING (key_fp)
WHERE k.zombie IS NOT NULL
  AND (k.zombie <> 'unknown' OR k.presented >= $min_calls)
ORDER BY presented DESC NULLS LAST, last_seen NULLS FIRST, key_fp
