-- Metered quota utilisation per license and feature over the last $days days: the gateway's
-- latest count of units used in the current period against the limit, and how often the quota
-- warned (QUOTA_NEAR_LIMIT, QUOTA_OVERAGE) or refused (QUOTA_EXCEEDED); the fullest first.
-- Read from quota_days() (views.sql): whole days from the license rollups, the rest raw.
SELECT license_id,
       any_value(customer) AS customer,
       any_value(tier) AS tier,
       feature,
       max_by(quota_used, last_seen) AS quota_used,
       max_by(quota_limit, last_seen) AS quota_limit,
       round(100.0 * max_by(quota_used, last_seen) / max_by(quota_limit, last_seen), 1) AS utilisation_pct,
       sum(quota_alerts)::BIGINT AS quota_alerts,
       sum(quota_denials)::BIGINT AS quota_denials,
       max(last_seen) AS last_seen
FROM quota_days($now - to_days($days), $now)
GROUP BY license_id, feature
ORDER BY utilisation_pct DESC, quota_denials DESC, license_id, feature
