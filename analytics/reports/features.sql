-- Feature usage by feature and tier over the last $days days: checks made against a license,
-- how they were decided, and how many licenses and users asked.
SELECT feature, tier,
       count(*) AS calls,
       count(*) FILTER (WHERE decision = 'allow') AS allowed,
       count(*) FILTER (WHERE decision = 'alert') AS alerted,
       count(*) FILTER (WHERE decision = 'deny') AS denied,
       round(100.0 * count(*) FILTER (WHERE decision = 'deny') / count(*), 1) AS deny_pct,
       count(DISTINCT license_id) AS licenses,
       count(DISTINCT user_id) AS users
FROM audit
WHERE date >= CAST($now - to_days($days) AS DATE)
  AND date <= CAST($now AS DATE)
  AND ts >= $now - to_days($days)
  AND ts < $now
  AND license_id IS NOT NULL
  AND feature IS NOT NULL
GROUP BY feature, tier
ORDER BY calls DESC, feature, tier
