-- Seat utilisation per seat-limited license over the last $days days: the gateway's latest count
-- of seats in use (a seat is held for the policy's seat_ttl_days after a user's last use) against
-- the limit in force, with the calls made and the seat refusals and overages; the fullest first.
WITH latest AS (
    SELECT license_id,
           max_by(seats_used, ts) AS seats_used,
           max_by(seats_limit, ts) AS seats_limit,
           count(*) AS calls,
           count(*) FILTER (WHERE reason = 'SEAT_LIMIT_EXCEEDED') AS seat_denials,
           count(*) FILTER (WHERE reason = 'SEAT_OVERAGE') AS seat_overages,
           max(ts) AS last_seen
    FROM audit_window($now - to_days($days), $now)
    WHERE seats_limit > 0
    GROUP BY license_id
)
SELECT s.license_id, l.customer, l.tier, s.seats_used, s.seats_limit,
       round(100.0 * s.seats_used / s.seats_limit, 1) AS utilisation_pct,
       s.calls, s.seat_denials, s.seat_overages, s.last_seen
FROM latest s
LEFT JOIN licenses l USING (license_id)
ORDER BY utilisation_pct DESC, s.seat_denials DESC, s.license_id
