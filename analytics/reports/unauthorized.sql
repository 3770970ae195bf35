-- Who is being refused, over the last $hours hours, one row per source, `kind` saying why:
--   refused      401/403/429 answers by caller (null when unauthenticated), remote address,
--                status, reason and auth_error
--   key_probing  callers presenting at least $probe_keys distinct unknown keys (KEY_NOT_FOUND):
--                someone guessing keys, or a service with a badly broken key store
-- Counts and first/last seen; the loudest first.
WITH recent AS (
    SELECT ts, caller_id, remote_addr, http_status, reason, auth_error, key_fp
    FROM audit_window($now - to_hours($hours), $now)
    WHERE (http_status IN (401, 403, 429) OR reason = 'KEY_NOT_FOUND')
)
SELECT 'refused' AS kind, caller_id, remote_addr, http_status, reason, auth_error,
       count(*) AS calls, NULL::BIGINT AS distinct_keys, min(ts) AS first_seen, max(ts) AS last_seen
FROM recent
WHERE http_status IN (401, 403, 429)
GROUP BY ALL
UNION ALL
SELECT 'key_probing', caller_id, remote_addr, http_status, reason, NULL,
       count(*), count(DISTINCT key_fp), min(ts), max(ts)
FROM recent
WHERE reason = 'KEY_NOT_FOUND'
GROUP BY caller_id, remote_addr, http_status, reason
HAVING count(DISTINCT key_fp) >= $probe_keys
ORDER BY calls DESC, kind, caller_id NULLS FIRST, remote_addr
