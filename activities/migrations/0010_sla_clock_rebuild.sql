-- Rolling upgrades past 0009. A worker of an earlier release writes SLA events without applying them to their
-- clock's row, and a ticket's steps can go to old and new workers in turn, so a row can miss an event in the middle
-- of its history. Each event now says whether its row has it: the rows so far were built by 0009 or kept by the
-- audit step (true), an old worker's insert leaves the column out (false), and the audit step sets it.
ALTER TABLE sla_events ADD COLUMN clock_applied boolean NOT NULL DEFAULT true;
ALTER TABLE sla_events ALTER COLUMN clock_applied SET DEFAULT false;
-- Except what an old worker wrote while 0009 built the rows (after its snapshot): nothing tells those events apart,
-- so the events of open tickets, the clocks the at-risk gauge reads, count as unapplied, and the first worker to
-- start rebuilds those clocks from all their events (the same result for the rest).
UPDATE sla_events e SET clock_applied = false
FROM tickets t
WHERE t.id = e.ticket_id AND t.status IN ('new', 'open', 'pending') AND e.metric <> 'tier';
-- The events no row has yet: empty once the first worker has reconciled, but during a rolling upgrade, so the
-- workers' periodic check costs nothing.
CREATE INDEX sla_events_unapplied ON sla_events (ticket_id) WHERE NOT clock_applied AND metric <> 'tier';

-- Each SLA clock's state as its events define it: 0009's backfill as a view, from which the workers rebuild the
-- rows of those tickets (activities/clocks.py, reconcile). A condition on ticket_id reaches the window and the
-- aggregate (both are by ticket), so a rebuild reads only its tickets' events, by sla_events' key.
CREATE VIEW sla_clock_rebuild AS
SELECT ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds, target_seconds, business,
       CASE WHEN running THEN since END AS since,
       CASE WHEN running AND NOT done AND NOT business
            THEN since + make_interval(secs => greatest(0, target_seconds - elapsed_seconds)) END AS due_at
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
