-- One customer's decisions over the last $days days per $bucket, by license, feature, outcome,
-- reason, caller and environment, with the seats and metered quota the gateway counted (the
-- highest in the bucket) against their limits: what the Customers page draws.
SELECT date_trunc($bucket, ts) AS bucket, license_id, feature, decision, reason, caller_id, environment,
       count(*) AS calls,
       max(seats_used) AS seats_used, max(seats_limit) AS seats_limit,
       max(quota_used) AS quota_used, max(quota_limit) AS quota_limit
FROM audit_window($now - to_days($days), $now)
WHERE customer = $customer
GROUP BY ALL
ORDER BY bucket, license_id, feature, decision, reason, caller_id, environment
