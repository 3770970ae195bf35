-- Callers and gateway hosts whose deny rate jumped: the last $hours hours against the $hours
-- before them, for sources with at least $min_calls decisions in each period (a rate needs
-- enough decisions to mean anything), whose deny rate rose by at least $points percentage points;
-- the biggest rise first. `kind` is 'caller' or 'host'.
WITH recent AS (
    SELECT ts >= $now - to_hours($hours) AS is_current, caller_id, host_of(instance) AS host, decision
    FROM audit_window($now - to_hours(2 * $hours), $now)
),
rates AS (
    SELECT kind, source,
           count(*) FILTER (WHERE is_current) AS calls,
           count(*) FILTER (WHERE NOT is_current) AS previous_calls,
           count(*) FILTER (WHERE is_current AND decision = 'deny') AS denied,
           round(100.0 * count(*) FILTER (WHERE is_current AND decision = 'deny')
                 / nullif(count(*) FILTER (WHERE is_current), 0), 1) AS deny_pct,
           round(100.0 * count(*) FILTER (WHERE NOT is_current AND decision = 'deny')
                 / nullif(count(*) FILTER (WHERE NOT is_current), 0), 1) AS previous_deny_pct
    FROM (SELECT 'caller' AS kind, caller_id AS source, is_current, decision FROM recent WHERE caller_id IS NOT NULL
          UNION ALL
          SELECT 'host', host, is_current, decision FROM recent)
    GROUP BY kind, source
)
SELECT kind, source, calls, denied, deny_pct, previous_calls, previous_deny_pct, round(deny_pct - previous_deny_pct, 1) AS rise_points
FROM rates
WHERE calls >= $min_calls AND previous_calls >= $min_calls AND deny_pct - previous_deny_pct >= $points
ORDER BY rise_points DESC, kind, source
