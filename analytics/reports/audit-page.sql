-- One page of raw audit records over the last $hours hours, newest first, narrowed by the audit
-- explorer's filters ('any' / '' match everything; $license matches a license id or a customer),
-- with `matching`, the number of records all pages together hold.
--
-- A plain ORDER BY ts DESC LIMIT over millions of records reads every column of every record
-- (seconds at 10M). Instead the matching records are first counted per hour partition, reading
-- only the filtered columns; the hours that hold the requested page follow from the running
-- count, newest first, and only those hours' files are read in full.
WITH per_hour AS (
    SELECT date, hour, count(*) AS n
    FROM audit_window($now - to_hours($hours), $now)
    WHERE ($decision = 'any' OR decision = $decision)
      AND ($reason = '' OR reason = $reason)
      AND ($caller = '' OR caller_id = $caller)
      AND ($license = '' OR license_id = $license OR customer = $license)
      AND ($feature = '' OR feature = $feature)
    GROUP BY date, hour
),
placed AS (
    SELECT date, hour, n, sum(n) OVER (ORDER BY date DESC, hour DESC) - n AS newer FROM per_hour
),
wanted AS (  -- the hours holding records number ($page - 1) * $page_size onwards, and how many newer
    SELECT date, hour, newer
    FROM placed
    WHERE newer < $page * $page_size AND newer + n > ($page - 1) * $page_size
)
SELECT (SELECT sum(n) FROM per_hour)::BIGINT AS matching,
       ts, decision, reason, http_status, caller_id, remote_addr, endpoint, customer, product, tier,
       license_id, key_fp, user_id, feature, quantity, latency_us, auth_error, error, decision_id,
       request_id, instance, environment
FROM audit
WHERE date BETWEEN (SELECT min(date) FROM wanted) AND (SELECT max(date) FROM wanted)
  AND (date, hour) IN (SELECT date, hour FROM wanted)
  AND ts >= $now - to_hours($hours)
  AND ts < $now
  AND ($decision = 'any' OR decision = $decision)
  AND ($reason = '' OR reason = $reason)
  AND ($caller = '' OR caller_id = $caller)
  AND ($license = '' OR license_id = $license OR customer = $license)
  AND ($feature = '' OR feature = $feature)
ORDER BY ts DESC, decision_id
LIMIT $page_size
OFFSET ($page - 1) * $page_size - (SELECT coalesce(min(newer), 0) FROM wanted)
