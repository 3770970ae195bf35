-- One customer's licenses as the registry snapshot has them: status, expiry and days left (as of
-- $now; negative once expired), seat limit, and over the last $days days the calls, denials and
-- the latest seats in use; the soonest expiry first, perpetual licenses last.
WITH used AS (
    SELECT license_id,
           count(*) AS calls,
           count(*) FILTER (WHERE decision = 'deny') AS denied,
           max_by(seats_used, ts) FILTER (WHERE seats_limit > 0) AS seats_used,
           max_by(seats_limit, ts) FILTER (WHERE seats_limit > 0) AS seats_limit,
           max(ts) AS last_seen
    FROM audit_window($now - to_days($days), $now)
    WHERE customer = $customer
    GROUP BY license_id
)
SELECT l.license_id, l.product, l.tier, l.status, l.expires_at,
       CAST(floor(epoch(l.expires_at - $now) / 86400) AS INTEGER) AS days_left,
       u.seats_used, coalesce(u.seats_limit, l.seats_limit) AS seats_limit,
       coalesce(u.calls, 0) AS calls, coalesce(u.denied, 0) AS denied, u.last_seen
FROM licenses l
LEFT JOIN used u USING (license_id)
WHERE l.customer = $customer
ORDER BY l.expires_at NULLS LAST, l.license_id
