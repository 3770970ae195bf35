-- Seat utilisation per seat-limited license over the last $days days: the gateway's latest count
-- of seats in use (a seat is held for the policy's seat_ttl_days after a user's last use) against
-- the limit in force, with the calls made and the seat refusals and overages; the fullest first.
-- Read from license_days() (views.sql): whole days from the license rollups, the rest raw.
WITH latest AS (
    SELECT license_id,
           max_by(seats_used, seats_at) AS seats_used,
           max_by(seats_limit, seats_at) AS seats_limit,
           sum(calls) AS calls,
           sum(seat_denials) AS seat_denials,
           sum(seat_overages) AS seat_overages,
           max(last_seen) AS last_seen
    FROM license_days($now - to_days($days), $now)
    WHERE seats_limit > 0
    GROUP BY license_id
)
SELECT s.license_id, l.customer, l.tier, s.seats_used, s.seats_limit,
       round(100.0 * s.seats_used / s.seats_limit, 1) AS utilisation_pct,
       s.calls::BIGINT AS calls, s.seat_denials::BIGINT AS seat_denials, s.seat_overages::BIGINT AS seat_overages,
       s.last_seen
FROM latest s
LEFT JOIN licenses l USING (license_id)
ORDER BY utilisation_pct DESC, s.seat_denials DESC, s.license_id
