-- One page of raw audit records over the last $hours hours, newest first, narrowed by the audit
-- explorer's filters ('any' / '' match everything; $license matches a license id or a customer),
-- with `matching`, the number of records all pages together hold.
-- `matching` is a separate count over the same (not materialised) CTE, not count(*) OVER ():
-- a window would carry every column of every matching record through the sort.
WITH matching AS NOT MATERIALIZED (
    SELECT ts, decision, reason, http_status, caller_id, remote_addr, endpoint, customer, product,
           tier, license_id, key_fp, user_id, feature, quantity, latency_us, auth_error, error,
           decision_id, request_id, instance, environment
    FROM audit
    WHERE date >= CAST($now - to_hours($hours) AS DATE)
      AND date <= CAST($now AS DATE)
      AND ts >= $now - to_hours($hours)
      AND ts < $now
      AND ($decision = 'any' OR decision = $decision)
      AND ($reason = '' OR reason = $reason)
      AND ($caller = '' OR caller_id = $caller)
      AND ($license = '' OR license_id = $license OR customer = $license)
      AND ($feature = '' OR feature = $feature)
)
SELECT (SELECT count(*) FROM matching) AS matching, *
FROM matching
ORDER BY ts DESC, decision_id
LIMIT $page_size OFFSET ($page - 1) * $page_size
