-- Headline numbers for the last $hours hours and for the $hours before them, one row per period
-- ('current', 'previous'; both always present), so a change can be shown next to each number:
-- decisions, denials and deny %, alerts, p99 latency, and authentication failures (401).
-- Read from summary() (views.sql), split at the periods' boundary; p99 from its latency
-- histograms, so within 0.5 % above 1 ms.
WITH summarised AS (
    SELECT kind, after_split AS is_current, decision, http_status, latency_us, calls
    FROM summary($now - to_hours(2 * $hours), $now, $now - to_hours($hours))
),
counts AS (
    SELECT is_current,
           sum(calls)::BIGINT AS decisions,
           coalesce(sum(calls) FILTER (WHERE decision = 'deny'), 0)::BIGINT AS denied,
           coalesce(sum(calls) FILTER (WHERE decision = 'alert'), 0)::BIGINT AS alerts,
           coalesce(sum(calls) FILTER (WHERE http_status = 401), 0)::BIGINT AS auth_failures
    FROM summarised
    WHERE kind = 'decisions'
    GROUP BY is_current
),
ranked AS (
    SELECT is_current, latency_us,
           sum(sum(calls)) OVER (PARTITION BY is_current ORDER BY latency_us) AS upto,
           sum(sum(calls)) OVER (PARTITION BY is_current) AS total
    FROM summarised
    WHERE kind = 'latency'
    GROUP BY is_current, latency_us
),
p99 AS (
    SELECT is_current, histogram_quantile(latency_us, upto, total, 0.99) AS p99_us FROM ranked GROUP BY is_current
)
SELECT p.period,
       coalesce(c.decisions, 0) AS decisions,
       coalesce(c.denied, 0) AS denied,
       round(100.0 * c.denied / nullif(c.decisions, 0), 2) AS deny_pct,
       coalesce(c.alerts, 0) AS alerts,
       p99.p99_us,
       coalesce(c.auth_failures, 0) AS auth_failures
FROM (VALUES ('current', true), ('previous', false)) AS p(period, is_current)
LEFT JOIN counts c USING (is_current)
LEFT JOIN p99 USING (is_current)
ORDER BY p.period
