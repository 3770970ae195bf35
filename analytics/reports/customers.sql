-- Every customer of the registry snapshot: its licenses (all, and active), and its decisions over
-- the last $days days with how many were denied; the busiest first. The dashboard's customer picker.
WITH used AS (
    SELECT customer, count(*) AS decisions, count(*) FILTER (WHERE decision = 'deny') AS denied
    FROM audit_window($now - to_days($days), $now)
    WHERE customer IS NOT NULL
    GROUP BY customer
)
SELECT l.customer,
       count(*) AS licenses,
       count(*) FILTER (WHERE l.status = 'active') AS active_licenses,
       coalesce(any_value(u.decisions), 0) AS decisions,
       coalesce(any_value(u.denied), 0) AS denied
FROM licenses l
LEFT JOIN used u USING (customer)
GROUP BY l.customer
ORDER BY decisions DESC, l.customer
