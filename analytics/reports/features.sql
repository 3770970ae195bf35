-- Feature usage by feature and tier over the last $days days: checks made against a license,
-- how they were decided, and how many licenses asked. Read from feature_days() (views.sql):
-- whole days from the license rollups, the rest raw; counted per license first, so the distinct
-- count is over a few thousand rows, not every record.
WITH per_license AS (
    SELECT feature, tier, license_id, sum(calls) AS calls, sum(allowed) AS allowed, sum(alerted) AS alerted
    FROM feature_days($now - to_days($days), $now)
    GROUP BY feature, tier, license_id
)
SELECT feature, tier, sum(calls)::BIGINT AS calls, sum(allowed)::BIGINT AS allowed, sum(alerted)::BIGINT AS alerted,
       sum(calls - allowed - alerted)::BIGINT AS denied,
       round(100.0 * sum(calls - allowed - alerted) / sum(calls), 1) AS deny_pct,
       count(*) AS licenses
FROM per_license
GROUP BY feature, tier
ORDER BY calls DESC, feature, tier
