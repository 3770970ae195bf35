-- Which seat-limited licenses are heading for their limit: per license, its distinct active users
-- (allowed or alerted) on each of the $days whole days before $now's (UTC), the straight-line
-- trend through them, and the day that trend reaches the seat limit (reaches_limit_on; today when
-- the seat count at the end of yesterday or the trend already has, none when it is flat,
-- falling, or a century away); at_risk when that day is within $horizon days. The soonest first. Read from
-- license_days() (views.sql): whole days, so from the license rollups once they are built.
WITH per_day AS (
    SELECT license_id, date, len(list_distinct(flatten(list(users)))) AS active_users,
           max_by(seats_used, seats_at) AS seats_used, max_by(seats_limit, seats_at) AS seats_limit,
           max(seats_at) AS seats_at
    FROM license_days(CAST(CAST($now AS DATE) - $days AS TIMESTAMPTZ), CAST(CAST($now AS DATE) AS TIMESTAMPTZ))
    GROUP BY license_id, date
),
limited AS (
    SELECT license_id, max_by(seats_limit, seats_at) AS seats_limit, max_by(seats_used, seats_at) AS seats_used
    FROM per_day
    WHERE seats_limit > 0
    GROUP BY license_id
),
days AS (  -- every day of the window, so days without use count as none
    SELECT CAST(d AS DATE) AS date, row_number() OVER (ORDER BY d) - 1 AS n
    FROM range(CAST(CAST($now AS DATE) - $days AS TIMESTAMP), CAST(CAST($now AS DATE) AS TIMESTAMP),
               INTERVAL 1 DAY) AS t(d)
),
series AS (
    SELECT l.license_id, d.date, d.n, coalesce(p.active_users, 0) AS active_users
    FROM limited l
    CROSS JOIN days d
    LEFT JOIN per_day p ON p.license_id = l.license_id AND p.date = d.date
),
trend AS (
    SELECT license_id, list(active_users ORDER BY date) AS daily_active_users,
           regr_slope(active_users, n) AS users_per_day,
           regr_intercept(active_users, n) + regr_slope(active_users, n) * max(n) AS trend_now
    FROM series
    GROUP BY license_id
),
projected AS (
    SELECT l.license_id, l.seats_limit, l.seats_used, t.daily_active_users, t.users_per_day, t.trend_now,
           CASE WHEN l.seats_used >= l.seats_limit OR t.trend_now >= l.seats_limit THEN CAST($now AS DATE)
                WHEN t.users_per_day > 0 AND (l.seats_limit - t.trend_now) / t.users_per_day < 36525
                THEN CAST($now AS DATE) + CAST(ceil((l.seats_limit - t.trend_now) / t.users_per_day) AS INTEGER)
           END AS reaches_limit_on
    FROM limited l
    JOIN trend t USING (license_id)
)
SELECT p.license_id, l.customer, l.tier, p.seats_limit, p.seats_used,
       p.daily_active_users, round(p.trend_now, 1) AS active_users_trend, round(p.users_per_day, 3) AS users_per_day,
       p.reaches_limit_on,
       coalesce(p.reaches_limit_on <= CAST($now AS DATE) + $horizon, false) AS at_risk
FROM projected p
LEFT JOIN licenses l USING (license_id)
ORDER BY reaches_limit_on NULLS LAST, p.users_per_day DESC, p.license_id
