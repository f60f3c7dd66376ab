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

-- The clocks so far, from their events, in one pass: each clock's latest run (a window over its events), then one
-- aggregate per clock, in the order the audit log wrote them. A business-hours clock's due instant needs the
-- department's calendar, which is policy, not data: the worker fills those in when it starts (activities/clocks.py,
-- fill_dues). A running clock's `since` is the last instant its elapsed time was measured at: its last start or
-- resume, or a reminder or retarget after it (the events are written in time order).
INSERT INTO sla_clocks (ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds, target_seconds,
                        business, since, due_at)
SELECT ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds, target_seconds, business,
       CASE WHEN running THEN since END,
       CASE WHEN running AND NOT done AND NOT business
            THEN since + make_interval(secs => greatest(0, target_seconds - elapsed_seconds)) END
FROM (
    SELECT ticket_id, metric, clock_started_at,
           max(seq) AS seq,
           coalesce((array_agg(event ORDER BY seq DESC, event = 'paused')
                     FILTER (WHERE event IN ('started', 'resumed', 'paused')))[1] <> 'paused', false) AS running,
           bool_or(event IN ('fulfilled', 'breached')) AS done,
           (array_agg(elapsed_seconds ORDER BY seq DESC))[1] AS elapsed_seconds,
           (array_agg(target_seconds ORDER BY seq DESC))[1] AS target_seconds,
           (array_agg(business ORDER BY seq DESC))[1] AS business,
           max(at) FILTER (WHERE event IN ('started', 'resumed', 'reminder', 'retargeted')) AS since
    FROM (
        SELECT *, max(clock_started_at) OVER (PARTITION BY ticket_id, metric) AS latest
        FROM sla_events
        WHERE metric <> 'tier'
    ) e
    WHERE clock_started_at = latest
    GROUP BY ticket_id, metric, clock_started_at
) clocks;
