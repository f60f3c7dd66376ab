-- SLA clock events with business-time figures, for exact first-response, resolution and
-- compliance reports per department, priority and day.

CREATE TABLE sla_events (
    ticket_id        text NOT NULL REFERENCES tickets (id),
    seq              integer NOT NULL,
    metric           text NOT NULL,
    clock_started_at timestamptz NOT NULL,  -- identifies one run of a clock (next reply restarts)
    event            text NOT NULL CHECK (event IN ('started', 'paused', 'resumed', 'reminder', 'breached',
                                                     'fulfilled', 'retargeted')),
    elapsed_seconds  double precision NOT NULL,
    target_seconds   integer NOT NULL,
    business         boolean NOT NULL,
    fraction         double precision,
    department       text,
    priority         text,
    at               timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, seq, metric, event)
);
CREATE INDEX sla_events_report ON sla_events (metric, event, at);

-- One row per SLA clock that has ended (met or breached), with the figures reports need.
-- A clock that breached and was met later counts as breached. Tier budgets are not SLAs: left out.
CREATE VIEW sla_outcomes AS
SELECT ticket_id,
       metric,
       max(department)                                      AS department,
       max(priority)                                        AS priority,
       clock_started_at                                     AS started_at,
       max(at) FILTER (WHERE event IN ('fulfilled', 'breached')) AS ended_at,
       max(elapsed_seconds) FILTER (WHERE event = 'fulfilled') AS business_seconds_to_fulfil,
       bool_or(event = 'breached')                          AS breached,
       bool_or(event = 'fulfilled')                         AS fulfilled
FROM sla_events
WHERE metric <> 'tier'
GROUP BY ticket_id, metric, clock_started_at;

-- The daily SLA report: per department, priority, metric and day the clock ended, how many clocks
-- ended, how many were met in time, compliance %, and the average business time to fulfil.
CREATE VIEW sla_daily AS
SELECT department,
       priority,
       metric,
       (ended_at AT TIME ZONE 'UTC')::date                                   AS day,
       count(*)                                                              AS clocks,
       count(*) FILTER (WHERE fulfilled AND NOT breached)                    AS met,
       count(*) FILTER (WHERE breached)                                      AS breached,
       round(100.0 * count(*) FILTER (WHERE fulfilled AND NOT breached) / count(*), 2) AS compliance_pct,
       avg(business_seconds_to_fulfil)                                       AS avg_business_seconds
FROM sla_outcomes
WHERE ended_at IS NOT NULL
GROUP BY department, priority, metric, (ended_at AT TIME ZONE 'UTC')::date;
