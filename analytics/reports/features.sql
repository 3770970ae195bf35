-- Feature usage by feature and tier over the last $days days: checks made against a license,
-- how they were decided, and how many licenses asked. Counted per license first, so the
-- distinct count is over a few thousand rows, not every record.
WITH per_license AS (
    SELECT feature, tier, license_id,
           count(*) AS calls,
           count(*) FILTER (WHERE decision = 'allow') AS allowed,
           count(*) FILTER (WHERE decision = 'alert') AS alerted
    FROM audit_window($now - to_days($days), $now)
    WHERE license_id IS NOT NULL
      AND feature IS NOT NULL
    GROUP BY feature, tier, license_id
)
SELECT feature, tier, sum(calls) AS calls, sum(allowed) AS allowed, sum(alerted) AS alerted,
       sum(calls - allowed - alerted) AS denied,
       round(100.0 * sum(calls - allowed - alerted) / sum(calls), 1) AS deny_pct,
       count(*) AS licenses
FROM per_license
GROUP BY feature, tier
ORDER BY calls DESC, feature, tier
