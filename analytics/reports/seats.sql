-- Seat utilisation per seat-limited license over the last $days days (a seat is held for
-- seat_ttl_days after a user's last use; pass that as $days): the gateway's latest count of
-- seats used against the limit, the distinct users actually seen, and seat refusals/overages.
SELECT license_id,
       any_value(customer) AS customer,
       any_value(tier) AS tier,
       arg_max(seats_used, ts) FILTER (WHERE seats_used IS NOT NULL) AS seats_used,
       arg_max(seats_limit, ts) FILTER (WHERE seats_limit IS NOT NULL) AS seats_limit,
       round(100.0 * arg_max(seats_used, ts) FILTER (WHERE seats_used IS NOT NULL)
             / arg_max(seats_limit, ts) FILTER (WHERE seats_limit IS NOT NULL), 1) AS utilisation_pct,
       count(DISTINCT user_id) FILTER (WHERE decision <> 'deny') AS active_users,
       count(*) FILTER (WHERE reason = 'SEAT_LIMIT_EXCEEDED') AS seat_denials,
       count(*) FILTER (WHERE reason = 'SEAT_OVERAGE') AS seat_overages,
       max(ts) AS last_seen
FROM audit
WHERE date >= CAST($now - to_days($days) AS DATE)
  AND date <= CAST($now AS DATE)
  AND ts >= $now - to_days($days)
  AND ts < $now
  AND license_id IS NOT NULL
GROUP BY license_id
HAVING arg_max(seats_limit, ts) FILTER (WHERE seats_limit IS NOT NULL) > 0
ORDER BY utilisation_pct DESC, seat_denials DESC, license_id
