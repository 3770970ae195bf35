-- Keys nobody uses and keys that should no longer be used, one row per key, `kind` saying which:
--   stale       active, unexpired license whose key got no allow/alert within $days days
--   never_used  the same, never allowed at all, issued more than $days days ago
--   revoked / expired / unknown
--               "zombie" keys still presented within $days days: the key of a revoked or
--               expired license (in grace or not), or a key no license has. An unknown key counts
--               once presented $min_calls times, so one-off guesses (key probing, reported by
--               `unauthorized`) do not bury the keys left behind in some service's config.
WITH used AS (
    SELECT key_fp, max(ts) AS last_used
    FROM audit
    WHERE date <= CAST($now AS DATE)
      AND ts < $now
      AND decision IN ('allow', 'alert')
      AND key_fp IS NOT NULL
    GROUP BY key_fp
),
stale AS (
    SELECT CASE WHEN u.last_used IS NULL THEN 'never_used' ELSE 'stale' END AS kind,
           l.license_id, l.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
           u.last_used AS last_seen,
           NULL::BIGINT AS presented,
           NULL::VARCHAR[] AS callers
    FROM licenses l
    LEFT JOIN used u USING (key_fp)
    WHERE l.status = 'active'
      AND (l.expires_at IS NULL OR l.expires_at > $now)
      AND coalesce(u.last_used, l.created_at) < $now - to_days($days)
),
zombies AS (
    SELECT CASE reason WHEN 'LICENSE_REVOKED' THEN 'revoked'
                       WHEN 'KEY_NOT_FOUND' THEN 'unknown'
                       ELSE 'expired' END AS kind,
           key_fp,
           any_value(license_id) AS license_id,
           count(*) AS presented,
           list(DISTINCT caller_id ORDER BY caller_id) FILTER (WHERE caller_id IS NOT NULL) AS callers,
           max(ts) AS last_seen
    FROM audit
    WHERE date >= CAST($now - to_days($days) AS DATE)
      AND date <= CAST($now AS DATE)
      AND ts >= $now - to_days($days)
      AND ts < $now
      AND reason IN ('LICENSE_REVOKED', 'LICENSE_EXPIRED', 'EXPIRED_IN_GRACE', 'KEY_NOT_FOUND')
      AND key_fp IS NOT NULL
    GROUP BY ALL
    HAVING kind <> 'unknown' OR count(*) >= $min_calls
)
SELECT kind, license_id, key_fp, customer, product, tier, status, expires_at, last_seen, presented, callers
FROM stale
UNION ALL
SELECT z.kind, z.license_id, z.key_fp, l.customer, l.product, l.tier, l.status, l.expires_at,
       z.last_seen, z.presented, z.callers
FROM zombies z
LEFT JOIN licenses l USING (license_id)
ORDER BY presented DESC NULLS LAST, last_seen NULLS FIRST, key_fp
