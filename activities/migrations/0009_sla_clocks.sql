-- The current state of every SLA clock: one row per ticket and metric, written by the audit step in the same
-- transaction as the clock's events (sla_events stays the history and what reports read). The backlog's at-risk
-- gauge counts the running clocks due within the hour from the partial index below, instead of replaying every
-- event of every open ticket in the worker at each read (1.2 s at 1M tickets, bench/database.py).
CREATE TABLE sla_clocks (
    ticket_id        text NOT NULL REFERENCES tickets (id),
    metric           text NOT NULL,
    clock_started_at timestamptz NOT NULL,  -- the run of the clock held here: a next reply starts a new one
    seq              integer NOT NULL,      -- the audit entry that last changed it; an older one changes nothing
    running          boolean NOT NULL,
    done             boolean NOT NULL,      -- met or breached: no longer at risk
    elapsed_seconds  double precision NOT NULL,
    target_seconds   integer NOT NULL,
    business         boolean NOT NULL,
    since            timestamptz,           -- the instant elapsed_seconds was measured at, while running
    due_at           timestamptz,           -- when the target is reached if it keeps running; NULL unless running
    PRIMARY KEY (ticket_id, metric)
);
CREATE INDEX sla_clocks_due ON sla_clocks (due_at) WHERE running AND NOT done;

-- The clocks so far, from their events: the latest run of each, in the order the audit log wrote them. A
-- business-hours clock's due instant needs the department's calendar, which is policy, not data: the worker
-- fills those in when it starts (activities/clocks.py, fill_dues).
WITH latest AS (
    SELECT ticket_id, metric, max(clock_started_at) AS clock_started_at
    FROM sla_events
    WHERE metric <> 'tier'
    GROUP BY ticket_id, metric
),
run AS (
    SELECT e.*
    FROM sla_events e
    JOIN latest l USING (ticket_id, metric, clock_started_at)
),
toggled AS (  -- the last start, resume or pause of each run: whether it runs
    SELECT DISTINCT ON (ticket_id, metric) ticket_id, metric, event <> 'paused' AS running
    FROM run
    WHERE event IN ('started', 'resumed', 'paused')
    ORDER BY ticket_id, metric, seq DESC, event = 'paused'
),
last AS (  -- the figures of its last event
    SELECT DISTINCT ON (ticket_id, metric) ticket_id, metric, clock_started_at, seq, elapsed_seconds,
           target_seconds, business
    FROM run
    ORDER BY ticket_id, metric, seq DESC
),
state AS (  -- whether it ended, and the last instant its elapsed time was measured at (for a running clock,
            -- its last start or resume or a reminder or retarget after it)
    SELECT ticket_id, metric,
           bool_or(event IN ('fulfilled', 'breached')) AS done,
           max(at) FILTER (WHERE event IN ('started', 'resumed', 'reminder', 'retargeted')) AS since
    FROM run
    GROUP BY ticket_id, metric
)
INSERT INTO sla_clocks (ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds, target_seconds,
                        business, since, due_at)
SELECT l.ticket_id, l.metric, l.clock_started_at, l.seq, coalesce(t.running, false), s.done, l.elapsed_seconds,
       l.target_seconds, l.business,
       CASE WHEN t.running THEN s.since END,
       CASE WHEN t.running AND NOT s.done AND NOT l.business
            THEN s.since + make_interval(secs => greatest(0, l.target_seconds - l.elapsed_seconds)) END
FROM last l
JOIN state s USING (ticket_id, metric)
LEFT JOIN toggled t USING (ticket_id, metric);
