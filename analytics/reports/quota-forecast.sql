-- When each metered quota runs out, per license and metered feature: the units used so far in
-- the current period, the average daily burn since the period began, the projected moment the
-- limit is reached at that rate, and whether that falls before the period ends (runs_out); the
-- soonest first.
-- The audit trail does not record a quota's period, so it is read from the counter: a counter
-- that went down at the start of a day other than a month's first resets daily (period 'day'),
-- any other is monthly (the policy's two periods, both UTC). Read from quota_days() (views.sql):
-- whole days from the license rollups, the rest raw; the current month and the week before.
WITH per_day AS (  -- one row per license, feature and day, every host together
    SELECT license_id, feature, date,
           min_by(quota_first, first_seen) AS quota_first,
           max_by(quota_used, last_seen) AS quota_used,
           max_by(quota_limit, last_seen) AS quota_limit,
           max(last_seen) AS last_seen
    FROM quota_days(least(date_trunc('month', $now), $now - INTERVAL 7 DAY), $now)
    GROUP BY license_id, feature, date
),
periods AS (
    SELECT license_id, feature,
           CASE WHEN bool_or(quota_first < previous_used AND date = previous_date + 1 AND day(date) <> 1)
                THEN 'day' ELSE 'month' END AS period
    FROM (SELECT *, lag(quota_used) OVER w AS previous_used, lag(date) OVER w AS previous_date
          FROM per_day WINDOW w AS (PARTITION BY license_id, feature ORDER BY date))
    GROUP BY license_id, feature
),
current AS (
    SELECT p.license_id, p.feature, p.period,
           date_trunc(p.period, $now) AS period_start,
           date_trunc(p.period, $now) + CASE p.period WHEN 'day' THEN INTERVAL 1 DAY ELSE INTERVAL 1 MONTH END AS period_end,
           max_by(d.quota_used, d.last_seen) AS quota_used,
           max_by(d.quota_limit, d.last_seen) AS quota_limit,
           max(d.last_seen) AS last_seen
    FROM periods p
    JOIN per_day d USING (license_id, feature)
    WHERE d.date >= CAST(date_trunc(p.period, $now) AS DATE)
    GROUP BY ALL
),
projected AS (
    SELECT *,
           CASE WHEN quota_used >= quota_limit THEN $now  -- already reached
                WHEN quota_used > 0
                THEN $now + to_microseconds(CAST((quota_limit - quota_used) * epoch_us($now - period_start)
                                                 / quota_used AS BIGINT))
           END AS exhausts_at
    FROM current
)
SELECT r.license_id, l.customer, l.tier, r.feature, r.period, r.period_start, r.period_end,
       r.quota_used, r.quota_limit,
       round(100.0 * r.quota_used / r.quota_limit, 1) AS used_pct,
       round(r.quota_used / (epoch($now - r.period_start) / 86400), 2) AS burn_per_day,
       r.exhausts_at,
       coalesce(r.exhausts_at < r.period_end, false) AS runs_out,
       r.last_seen
FROM projected r
LEFT JOIN licenses l USING (license_id)
ORDER BY runs_out DESC, exhausts_at NULLS LAST, used_pct DESC, r.license_id, r.feature
