-- Headline numbers for the last $hours hours and for the $hours before them, one row per period
-- ('current', 'previous'; both always present), so a change can be shown next to each number:
-- decisions, denials and deny %, alerts, p99 latency, and authentication failures (401).
WITH windowed AS (
    SELECT CASE WHEN ts >= $now - to_hours($hours) THEN 'current' ELSE 'previous' END AS period,
           decision, http_status, latency_us
    FROM audit_window($now - to_hours(2 * $hours), $now)
)
SELECT p.period,
       count(w.decision) AS decisions,
       count(*) FILTER (WHERE w.decision = 'deny') AS denied,
       round(100.0 * count(*) FILTER (WHERE w.decision = 'deny') / nullif(count(w.decision), 0), 2) AS deny_pct,
       count(*) FILTER (WHERE w.decision = 'alert') AS alerts,
       quantile_cont(w.latency_us, 0.99) AS p99_us,
       count(*) FILTER (WHERE w.http_status = 401) AS auth_failures
FROM (VALUES ('current'), ('previous')) AS p(period)
LEFT JOIN windowed w USING (period)
GROUP BY p.period
ORDER BY p.period
