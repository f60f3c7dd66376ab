-- The LiveAgent-style department report, one SQL function shared by `ticketflow report` and Grafana:
-- per department and day/week/month (in a chosen time zone), every period present, even empty ones.

-- So each part of the report reads only its period instead of scanning a table:
-- listing all departments (a loose index scan) and first responses per department and period.
CREATE INDEX tickets_department_first_response ON tickets (department, first_response_at);
-- agent replies per period (customer messages and notes are never read by the report).
CREATE INDEX messages_agent_created_at ON messages (created_at) WHERE author_kind = 'agent';
-- ratings per department and period.
CREATE INDEX csat_ratings_department_rated_at ON csat_ratings (department, rated_at);

-- Events count in [from_ts, to_ts). Resolved/reopened/answered/created count under the ticket's current
-- department; SLA figures under the department the clock ran in, ratings under the rated department.
CREATE FUNCTION department_report(
    departments text[],
    bucket      text,
    from_ts     timestamptz,
    to_ts       timestamptz,
    tz          text DEFAULT 'UTC'
) RETURNS TABLE (
    department                          text,
    period_start                        timestamptz,
    created                             bigint,
    resolved                            bigint,
    reopened                            bigint,
    answered                            bigint,
    agent_replies                       bigint,
    avg_first_response_seconds          double precision,
    avg_first_response_business_seconds double precision,
    avg_next_response_business_seconds  double precision,
    avg_resolution_business_seconds     double precision,
    ratings                             bigint,
    positive_pct                        numeric,
    negative_pct                        numeric,
    sla_clocks                          bigint,
    sla_met                             bigint,
    sla_compliance_pct                  numeric
)
LANGUAGE plpgsql
STABLE
AS $fn$
#variable_conflict use_column
DECLARE
    depts text[];
    step  interval;
BEGIN
    IF bucket IS NULL OR bucket NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'department_report: bucket must be day, week or month, not %', coalesce(quote_literal(bucket), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF from_ts IS NULL OR to_ts IS NULL OR tz IS NULL THEN
        RAISE EXCEPTION 'department_report: from_ts, to_ts and tz must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF to_ts < from_ts THEN
        RAISE EXCEPTION 'department_report: to_ts % is before from_ts %', to_ts, from_ts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM now() AT TIME ZONE tz;  -- an unknown zone fails here with PostgreSQL's own message
    step := ('1 ' || bucket)::interval;

    IF cardinality(array_remove(departments, NULL)) > 0 THEN
        depts := ARRAY(SELECT DISTINCT d FROM unnest(departments) AS u(d) WHERE d IS NOT NULL ORDER BY d);
    ELSE
        -- every department that has tickets, by skipping through tickets_department_first_response
        WITH RECURSIVE walk(dept) AS (
            SELECT min(t.department) FROM tickets t
            UNION ALL
            SELECT (SELECT min(t.department) FROM tickets t WHERE t.department > w.dept)
            FROM walk w
            WHERE w.dept IS NOT NULL
        )
        SELECT coalesce(array_agg(w.dept ORDER BY w.dept), '{}') INTO depts FROM walk w WHERE w.dept IS NOT NULL;
    END IF;

    RETURN QUERY
    WITH
    periods AS (
        SELECT g.p AS local_start
        FROM generate_series(
            date_trunc(bucket, from_ts AT TIME ZONE tz),
            date_trunc(bucket, (to_ts - interval '1 microsecond') AT TIME ZONE tz),
            step
        ) AS g(p)
    ),
    created_n AS (  -- tickets_created_at
        SELECT t.department AS dept, date_trunc(bucket, t.created_at AT TIME ZONE tz) AS local_start, count(*) AS n
        FROM tickets t
        WHERE t.created_at >= from_ts AND t.created_at < to_ts AND t.department = ANY(depts)
        GROUP BY 1, 2
    ),
    lifecycle AS (  -- audit_log_event_at
        SELECT t.department AS dept, date_trunc(bucket, a.at AT TIME ZONE tz) AS local_start,
               count(*) FILTER (WHERE a.event = 'resolved') AS resolved_n,
               count(*) FILTER (WHERE a.event = 'reopened') AS reopened_n
        FROM audit_log a
        JOIN tickets t ON t.id = a.ticket_id
        WHERE a.event IN ('resolved', 'reopened') AND a.at >= from_ts AND a.at < to_ts AND t.department = ANY(depts)
        GROUP BY 1, 2
    ),
    replies AS (  -- messages_agent_created_at
        SELECT t.department AS dept, date_trunc(bucket, m.created_at AT TIME ZONE tz) AS local_start,
               count(DISTINCT m.ticket_id) AS answered_n, count(*) AS replies_n
        FROM messages m
        JOIN tickets t ON t.id = m.ticket_id
        WHERE m.author_kind = 'agent' AND m.created_at >= from_ts AND m.created_at < to_ts
          AND t.department = ANY(depts)
        GROUP BY 1, 2
    ),
    first_responses AS (  -- tickets_department_first_response
        SELECT t.department AS dept, date_trunc(bucket, t.first_response_at AT TIME ZONE tz) AS local_start,
               avg(extract(epoch FROM t.first_response_at - t.created_at))::double precision AS avg_seconds
        FROM tickets t
        WHERE t.department = ANY(depts) AND t.first_response_at >= from_ts AND t.first_response_at < to_ts
        GROUP BY 1, 2
    ),
    -- The clocks with an ending event in range (sla_events_report), then each one's outcome from sla_outcomes
    -- by its key (sla_events_pkey). Joined plainly, the view would aggregate every clock ever run before
    -- filtering. The metrics listed are every metric sla_outcomes keeps (all but 'tier'); naming them lets
    -- the index range over them.
    ending AS (
        SELECT DISTINCT e.ticket_id, e.metric, e.clock_started_at
        FROM sla_events e
        WHERE e.metric IN ('first_response', 'next_reply', 'resolution') AND e.event IN ('fulfilled', 'breached')
          AND e.at >= from_ts AND e.at < to_ts
    ),
    sla AS (
        SELECT o.department AS dept, date_trunc(bucket, o.ended_at AT TIME ZONE tz) AS local_start,
               avg(o.business_seconds_to_fulfil) FILTER (WHERE o.fulfilled AND o.metric = 'first_response') AS fr,
               avg(o.business_seconds_to_fulfil) FILTER (WHERE o.fulfilled AND o.metric = 'next_reply') AS nr,
               avg(o.business_seconds_to_fulfil) FILTER (WHERE o.fulfilled AND o.metric = 'resolution') AS res,
               count(*) AS clocks,
               count(*) FILTER (WHERE o.fulfilled AND NOT o.breached) AS met  -- as in sla_daily
        FROM ending c
        CROSS JOIN LATERAL (
            SELECT s.* FROM sla_outcomes s
            WHERE s.ticket_id = c.ticket_id AND s.metric = c.metric AND s.started_at = c.clock_started_at
            OFFSET 0  -- stays a per-clock lookup: flattened, the planner aggregates the whole view
        ) o
        WHERE o.ended_at >= from_ts AND o.ended_at < to_ts AND o.department = ANY(depts)
        GROUP BY 1, 2
    ),
    csat AS (  -- csat_ratings_department_rated_at
        SELECT r.department AS dept, date_trunc(bucket, r.rated_at AT TIME ZONE tz) AS local_start,
               count(*) AS n,
               count(*) FILTER (WHERE r.score >= 4) AS good,
               count(*) FILTER (WHERE r.score <= 2) AS bad
        FROM csat_ratings r
        WHERE r.department = ANY(depts) AND r.rated_at >= from_ts AND r.rated_at < to_ts
        GROUP BY 1, 2
    )
    SELECT d.dept,
           p.local_start AT TIME ZONE tz,
           coalesce(c.n, 0),
           coalesce(l.resolved_n, 0),
           coalesce(l.reopened_n, 0),
           coalesce(rp.answered_n, 0),
           coalesce(rp.replies_n, 0),
           f.avg_seconds,
           s.fr,
           s.nr,
           s.res,
           coalesce(r.n, 0),
           round(100.0 * r.good / nullif(r.n, 0), 2),
           round(100.0 * r.bad / nullif(r.n, 0), 2),
           coalesce(s.clocks, 0),
           coalesce(s.met, 0),
           round(100.0 * s.met / nullif(s.clocks, 0), 2)
    FROM unnest(depts) AS d(dept)
    CROSS JOIN periods p
    LEFT JOIN created_n c ON c.dept = d.dept AND c.local_start = p.local_start
    LEFT JOIN lifecycle l ON l.dept = d.dept AND l.local_start = p.local_start
    LEFT JOIN replies rp ON rp.dept = d.dept AND rp.local_start = p.local_start
    LEFT JOIN first_responses f ON f.dept = d.dept AND f.local_start = p.local_start
    LEFT JOIN sla s ON s.dept = d.dept AND s.local_start = p.local_start
    LEFT JOIN csat r ON r.dept = d.dept AND r.local_start = p.local_start
    ORDER BY d.dept, p.local_start;
END
$fn$;

COMMENT ON FUNCTION department_report(text[], text, timestamptz, timestamptz, text) IS
    'Per department and day/week/month in time zone tz, every period in [from_ts, to_ts): created, resolved, '
    'reopened, answered, replies, response and resolution times, CSAT and SLA compliance. NULL or empty '
    'departments means every department that has tickets.';
