-- Metered quota utilisation per license and feature over the last $days days: the gateway's
-- latest count of units used in the current period against the limit, and how often the quota
-- warned (QUOTA_NEAR_LIMIT, QUOTA_OVERAGE) or refused (QUOTA_EXCEEDED); the fullest first.
SELECT license_id,
       any_value(customer) AS customer,
       any_value(tier) AS tier,
       feature,
       arg_max(quota_used, ts) AS quota_used,
       arg_max(quota_limit, ts) AS quota_limit,
       round(100.0 * arg_max(quota_used, ts) / arg_max(quota_limit, ts), 1) AS utilisation_pct,
       count(*) FILTER (WHERE reason IN ('QUOTA_NEAR_LIMIT', 'QUOTA_OVERAGE')) AS quota_alerts,
       count(*) FILTER (WHERE reason = 'QUOTA_EXCEEDED') AS quota_denials,
       max(ts) AS last_seen
FROM audit_window($now - to_days($days), $now)
WHERE license_id IS NOT NULL
  AND quota_limit > 0
GROUP BY license_id, feature
ORDER BY utilisation_pct DESC, quota_denials DESC, license_id, feature
