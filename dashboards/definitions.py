"""ticketflow's Grafana dashboards: Operations, SLA, Escalations & tiers, CSAT, and the department
report. Counters and histograms come from Prometheus; panels that need exact per-ticket history
(the LiveAgent-style department report, daily compliance, open escalated tickets) read PostgreSQL.

`$__range` panels answer "over the selected time range"; `$__rate_interval` panels draw a rate.
"""

from __future__ import annotations

from typing import Any

from dashboards.builder import Dashboard, Panel, Query, Row, Variable

DEPT = 'department=~"$department"'
PRIO = 'priority=~"$priority"'
OPEN = 'status=~"new|open|pending"'

DEPARTMENT = Variable(
    "department", "Department", "label_values(ticketflow_backlog_oldest_open_seconds, department)", "prometheus"
)
PRIORITY = Variable("priority", "Priority", "urgent,high,normal,low", "custom")
SQL_DEPARTMENT = Variable(
    "department",
    "Department",
    # a loose index scan (tickets_open_by_department's leading column), not a pass over every ticket
    "WITH RECURSIVE d(department) AS (SELECT min(department) FROM tickets UNION ALL "
    "SELECT (SELECT min(t.department) FROM tickets t WHERE t.department > d.department) FROM d "
    "WHERE d.department IS NOT NULL) SELECT department FROM d WHERE department IS NOT NULL",
    "postgres",
)
BUCKET = Variable("bucket", "Period", "day,week,month", "custom", multi=False)

GOOD_IS_HIGH = [(None, "red"), (90.0, "orange"), (95.0, "green")]
GOOD_IS_LOW = [(None, "green"), (1.0, "orange"), (5.0, "red")]


HBAR = {"orientation": "horizontal", "displayMode": "gradient"}


def bars(title: str, expr: str, legend: str, description: str = "", **options: Any) -> Panel:
    """A horizontal bar per series, at the end of the range: the shape of most "by X" panels."""
    return Panel(title, "bargauge", [prom(expr, legend, instant=True)], description, options=HBAR, **options)


def prom(expr: str, legend: str = "", *, instant: bool = False, heatmap: bool = False) -> Query:
    return Query(expr, legend, table=instant, heatmap=heatmap)


def with_local(expr: str) -> str:
    """`expr` over the activities' metric (`temporal_{local}activity_...` with `local` empty), `or` the same over the
    local activities', those series labelled kind="local". Not a regex over both names: rate() and increase() drop
    the name, so once an activity type has run both ways (open_ticket while tickets from before patch
    open-as-local-step still open) the two series' labels are the same and Prometheus refuses the whole query."""
    return f'{expr.format(local="")} or label_replace({expr.format(local="local_")}, "kind", "local", "", "")'


def sql(text: str, *, table: bool = True) -> Query:
    return Query(" ".join(text.split()), sql=True, table=table)


def quantiles(metric: str, time: str, by: str = "", window: str = "$__rate_interval") -> list[Query]:
    group = f"le, {by}" if by else "le"
    sel = f'{metric}_bucket{{time="{time}",{DEPT},{PRIO}}}'
    return [
        prom(f"histogram_quantile({q}, sum by ({group}) (increase({sel}[{window}])))", f"p{round(q * 100)}")
        for q in (0.5, 0.9)
    ]


def compliance(by: str = "") -> str:
    group = f" by ({by})" if by else ""
    met = f'sum{group} (increase(ticketflow_sla_events_total{{event="met",{DEPT},{PRIO}}}[$__range]))'
    ended = f'sum{group} (increase(ticketflow_sla_events_total{{event=~"met|breached",{DEPT},{PRIO}}}[$__range]))'
    return f"100 * {met} / {ended}"


OPERATIONS = Dashboard(
    uid="ticketflow-operations",
    title="ticketflow / Operations",
    description="Intake, backlog and the health of the workers: what an on-call operator watches.",
    variables=[DEPARTMENT, PRIORITY],
    rows=[
        Row(
            "Intake",
            [
                Panel(
                    "Tickets created",
                    "stat",
                    [prom(f'sum(increase(ticketflow_tickets_total{{event="created",{DEPT},{PRIO}}}[$__range]))')],
                    "Tickets accepted and categorised in the selected range.",
                    width=4,
                    decimals=0,
                ),
                Panel(
                    "Intake rate by channel",
                    "timeseries",
                    [
                        prom(
                            "sum by (channel) (rate(ticketflow_tickets_total"
                            f'{{event="created",{DEPT},{PRIO}}}[$__rate_interval]))',
                            "{{channel}}",
                        )
                    ],
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Intake requests by outcome",
                    "timeseries",
                    [
                        prom(
                            "sum by (entry, outcome) (increase(ticketflow_intake_requests_total[$__rate_interval]))",
                            "{{entry}} {{outcome}}",
                        )
                    ],
                    "HTTP and mail intake: opened, duplicate, reply, or why a request was refused (invalid, "
                    "too_large, wrong_type, bad_json, ...); unavailable means Temporal could not be reached.",
                    width=12,
                ),
                Panel(
                    "Intake rejects by reason",
                    "timeseries",
                    [
                        prom(
                            "sum by (reason) (increase(ticketflow_intake_rejected_total[$__rate_interval]))",
                            "{{reason}}",
                        )
                    ],
                    "Workflows started without the SDK's checks whose payload the intake activity refused, by "
                    "the first field at fault. Each failed with a precise message; nothing was stored.",
                    width=12,
                ),
            ],
        ),
        Row(
            "Backlog",
            [
                Panel(
                    "Open backlog",
                    "stat",
                    [prom(f"sum(ticketflow_backlog_tickets{{{OPEN},{DEPT},{PRIO}}})")],
                    "New, open and pending tickets, read from PostgreSQL at scrape time.",
                    width=4,
                    decimals=0,
                ),
                Panel(
                    "Oldest open ticket",
                    "stat",
                    [prom(f"max(ticketflow_backlog_oldest_open_seconds{{{DEPT}}})")],
                    unit="s",
                    width=4,
                ),
                Panel(
                    "Backlog by status",
                    "timeseries",
                    [prom(f"sum by (status) (ticketflow_backlog_tickets{{{DEPT},{PRIO}}})", "{{status}}")],
                    width=8,
                ),
                bars(
                    "Open backlog by department",
                    f"sum by (department) (ticketflow_backlog_tickets{{{OPEN},{DEPT},{PRIO}}})",
                    "{{department}}",
                    width=8,
                ),
            ],
        ),
        Row(
            "Workers",
            [
                Panel(
                    "Workers up",
                    "stat",
                    [prom('sum(up{job="ticketflow"})')],
                    "Worker processes Prometheus can scrape.",
                    width=4,
                    decimals=0,
                    thresholds=[(None, "red"), (1.0, "orange"), (2.0, "green")],
                ),
                Panel(
                    "Backlog gauges readable",
                    "stat",
                    [prom("min(ticketflow_backlog_up)")],
                    "1 when every worker could read the backlog from PostgreSQL at its last scrape.",
                    width=4,
                    thresholds=[(None, "red"), (1.0, "green")],
                ),
                Panel(
                    "Quarantined payloads",
                    "stat",
                    [prom("max(ticketflow_quarantine_held)")],
                    "Tickets started with a payload the intake refused, kept for an operator: "
                    "`ticketflow quarantine list`.",
                    width=4,
                    decimals=0,
                    thresholds=[(None, "green"), (1.0, "orange")],
                ),
                Panel(
                    "Task slots in use",
                    "timeseries",
                    [prom("sum by (worker_type) (temporal_worker_task_slots_used)", "{{worker_type}}")],
                    width=8,
                ),
                Panel(
                    "Sticky cache size",
                    "timeseries",
                    [prom("sum(temporal_sticky_cache_size)", "cached workflows")],
                    "Workflows held in worker memory; a replay happens when one is evicted.",
                    width=8,
                ),
                Panel(
                    "Workflow cache: replays and evictions",
                    "timeseries",
                    [
                        prom("sum(rate(temporal_sticky_cache_miss[$__rate_interval]))", "replays (cache misses)"),
                        prom(
                            "sum(rate(temporal_sticky_cache_total_forced_eviction[$__rate_interval]))",
                            "forced evictions",
                        ),
                    ],
                    "A ticket that wakes after being pushed out of a worker's cache replays its whole history. "
                    "A steady rate while many deadlines fall due together means TICKETFLOW_WORKFLOW_CACHE is "
                    "smaller than the tickets that wake at once: they then drain 1.3-1.7× slower.",
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Queue latency p95 (schedule to start)",
                    "timeseries",
                    [
                        prom(
                            "histogram_quantile(0.95, sum by (le) "
                            "(rate(temporal_workflow_task_schedule_to_start_latency_bucket[$__rate_interval])))",
                            "workflow tasks",
                        ),
                        prom(
                            "histogram_quantile(0.95, sum by (le) "
                            "(rate(temporal_activity_schedule_to_start_latency_bucket[$__rate_interval])))",
                            "activity tasks",
                        ),
                    ],
                    "How long tasks wait for a free worker: the first sign that workers are too few.",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Activity execution p95 by activity",
                    "timeseries",
                    [
                        prom(
                            with_local(
                                "histogram_quantile(0.95, sum by (le, activity_type) "
                                "(rate(temporal_{local}activity_execution_latency_bucket[$__rate_interval])))"
                            ),
                            "{{activity_type}} {{kind}}",
                        ),
                    ],
                    "Activities and local activities (the opening step, open_ticket, runs inside the ticket's first "
                    "workflow task).",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Workflow task execution p95",
                    "timeseries",
                    [
                        prom(
                            "histogram_quantile(0.95, sum by (le) "
                            "(rate(temporal_workflow_task_execution_latency_bucket[$__rate_interval])))",
                            "workflow tasks",
                        )
                    ],
                    "Time the worker spends running workflow code per task (replays included).",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Worker time stopped by the garbage collector",
                    "timeseries",
                    [
                        prom(
                            "sum by (instance, generation) "
                            "(rate(ticketflow_worker_gc_pause_seconds_sum[$__rate_interval]))",
                            "{{instance}} generation {{generation}}",
                        )
                    ],
                    "Share of wall time each worker stood still for Python's cycle collector: every activation and "
                    "activity waits it out. Generation 2 is a full collection, which walks every cached workflow "
                    "(at a cache of 1,000 about 0.25 s with the default sandbox, 0.6 s strict, every 10-15 s "
                    "under load): it bounds the p99 of intake latency. A smaller TICKETFLOW_WORKFLOW_CACHE, the "
                    "shared sandbox or more worker processes shorten it.",
                    unit="percentunit",
                    width=12,
                ),
                Panel(
                    "Activity failures by activity",
                    "timeseries",
                    [
                        prom(
                            with_local(
                                "sum by (activity_type) "
                                "(increase(temporal_{local}activity_execution_failed[$__rate_interval]))"
                            ),
                            "{{activity_type}} {{kind}}",
                        ),
                    ],
                    "Failed attempts of activities and local activities (the database steps), retried unless "
                    "non-retryable (invalid tickets).",
                    width=12,
                ),
                Panel(
                    "Email deliveries by outcome",
                    "timeseries",
                    [
                        prom(
                            "sum by (outcome) (increase(ticketflow_notifications_total[$__rate_interval]))",
                            "{{outcome}}",
                        )
                    ],
                    "sent; refused (permanent, e.g. bad address: recorded, not retried); transient (retried).",
                    width=12,
                ),
            ],
        ),
    ],
)

SLA = Dashboard(
    uid="ticketflow-sla",
    title="ticketflow / SLA",
    description="SLA compliance, breaches, response and resolution times, and what is about to breach.",
    variables=[DEPARTMENT, PRIORITY],
    time_from="now-7d",
    rows=[
        Row(
            "Compliance",
            [
                Panel(
                    "SLA compliance",
                    "stat",
                    [prom(compliance())],
                    "Clocks met in time out of clocks that ended (met or breached) in the range.",
                    unit="percent",
                    width=4,
                    decimals=1,
                    thresholds=GOOD_IS_HIGH,
                ),
                Panel(
                    "At risk now",
                    "stat",
                    [prom(f"sum(ticketflow_backlog_at_risk_tickets{{{DEPT},{PRIO}}})")],
                    "Open tickets with an SLA clock due within the hour (business hours counted).",
                    width=4,
                    decimals=0,
                    thresholds=GOOD_IS_LOW,
                ),
                Panel(
                    "Open with a breached SLA",
                    "stat",
                    [prom(f"sum(ticketflow_backlog_breached_tickets{{{DEPT},{PRIO}}})")],
                    width=4,
                    decimals=0,
                    thresholds=GOOD_IS_LOW,
                ),
                Panel(
                    "Compliance by department",
                    "bargauge",
                    [prom(compliance("department"), "{{department}}", instant=True)],
                    unit="percent",
                    width=6,
                    min=0,
                    max=100,
                    thresholds=GOOD_IS_HIGH,
                    options={"orientation": "horizontal", "displayMode": "gradient"},
                ),
                Panel(
                    "Compliance by priority",
                    "bargauge",
                    [prom(compliance("priority"), "{{priority}}", instant=True)],
                    unit="percent",
                    width=6,
                    min=0,
                    max=100,
                    thresholds=GOOD_IS_HIGH,
                    options={"orientation": "horizontal", "displayMode": "gradient"},
                ),
                bars(
                    "At risk by department",
                    f"sum by (department) (ticketflow_backlog_at_risk_tickets{{{DEPT},{PRIO}}})",
                    "{{department}}",
                    width=8,
                ),
                Panel(
                    "Breaches and reminders by metric",
                    "timeseries",
                    [
                        prom(
                            "sum by (metric, event) (increase(ticketflow_sla_events_total"
                            f'{{event=~"breached|reminder",{DEPT},{PRIO}}}[$__rate_interval]))',
                            "{{metric}} {{event}}",
                        )
                    ],
                    width=16,
                ),
            ],
        ),
        Row(
            "Response and resolution times",
            [
                Panel(
                    "First response (business time)",
                    "timeseries",
                    quantiles("ticketflow_first_response_seconds", "business"),
                    "Time on the SLA clock: business hours of the department, pauses excluded.",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Resolution (business time)",
                    "timeseries",
                    quantiles("ticketflow_resolution_seconds", "business"),
                    unit="s",
                    width=12,
                ),
                bars(
                    "First response p90 by department (calendar time)",
                    "histogram_quantile(0.9, sum by (le, department) (increase(ticketflow_first_response_"
                    f'seconds_bucket{{time="calendar",{DEPT},{PRIO}}}[$__range])))',
                    "{{department}}",
                    "What the customer waited, nights and weekends included.",
                    unit="s",
                    width=12,
                ),
                bars(
                    "Resolution p90 by priority (calendar time)",
                    "histogram_quantile(0.9, sum by (le, priority) (increase(ticketflow_resolution_"
                    f'seconds_bucket{{time="calendar",{DEPT},{PRIO}}}[$__range])))',
                    "{{priority}}",
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Exact daily figures (PostgreSQL)",
            [
                Panel(
                    "Daily SLA compliance",
                    "table",
                    [
                        sql(
                            """
                            SELECT day AS "Day", department AS "Department", priority AS "Priority",
                                   metric AS "Metric", clocks AS "Ended", met AS "Met", breached AS "Breached",
                                   compliance_pct AS "Compliance %", round(avg_business_seconds) AS "Avg business s"
                            FROM sla_daily
                            WHERE department IN (${department:sqlstring}) AND priority IN (${priority:sqlstring})
                              AND day BETWEEN $__timeFrom()::date AND $__timeTo()::date
                            ORDER BY day DESC, department, priority, metric
                            """
                        )
                    ],
                    "Every SLA clock that ended, from the sla_events table: exact, not sampled.",
                    width=24,
                    height=10,
                ),
            ],
        ),
    ],
)

ESCALATIONS = Dashboard(
    uid="ticketflow-escalations",
    title="ticketflow / Escalations & tiers",
    description="Tier moves (L1 to L4) by cause, and the tickets escalated right now.",
    variables=[DEPARTMENT, PRIORITY],
    time_from="now-7d",
    rows=[
        Row(
            "Tier moves",
            [
                Panel(
                    "Tier moves",
                    "stat",
                    [prom(f"sum(increase(ticketflow_escalations_total{{{DEPT}}}[$__range]))")],
                    "Escalations and de-escalations in the range.",
                    width=4,
                    decimals=0,
                ),
                bars(
                    "Moves by tier",
                    f"sum by (from_tier, to_tier) (increase(ticketflow_escalations_total{{{DEPT}}}[$__range]))",
                    "L{{from_tier}} → L{{to_tier}}",
                    width=10,
                ),
                bars(
                    "Moves by cause",
                    f"sum by (cause) (increase(ticketflow_escalations_total{{{DEPT}}}[$__range]))",
                    "{{cause}}",
                    "timer: a tier's budget ran out; breach: an SLA breach moved it up; manual: an agent.",
                    width=10,
                ),
                Panel(
                    "Escalation rate by department",
                    "timeseries",
                    [
                        prom(
                            f"sum by (department) (rate(ticketflow_escalations_total{{{DEPT}}}[$__rate_interval]))",
                            "{{department}}",
                        )
                    ],
                    unit="reqps",
                    width=12,
                ),
                bars(
                    "Open tickets by tier",
                    f"sum by (tier) (ticketflow_backlog_tickets{{{OPEN},{DEPT},{PRIO}}})",
                    "L{{tier}}",
                    width=12,
                ),
            ],
        ),
        Row(
            "Escalated tickets (PostgreSQL)",
            [
                Panel(
                    "Open tickets above tier 1",
                    "table",
                    [
                        sql(
                            """
                            SELECT id AS "Ticket", department AS "Department", priority AS "Priority",
                                   tier AS "Tier", coalesce(assignee, '(queue)') AS "Assignee",
                                   status AS "Status", sla_breached AS "SLA breached",
                                   round(extract(epoch FROM now() - created_at)) AS "Age s"
                            FROM tickets
                            WHERE status IN ('new', 'open', 'pending') AND tier > 1
                              AND department IN (${department:sqlstring}) AND priority IN (${priority:sqlstring})
                            ORDER BY tier DESC, created_at
                            LIMIT 200
                            """
                        )
                    ],
                    width=14,
                    height=10,
                ),
                Panel(
                    "Escalations per day by cause",
                    "timeseries",
                    [
                        sql(
                            """
                            SELECT date_trunc('day', a.at) AS time, a.detail->>'cause' AS metric, count(*) AS value
                            FROM audit_log a JOIN tickets t ON t.id = a.ticket_id
                            WHERE a.event = 'escalated' AND $__timeFilter(a.at)
                              AND t.department IN (${department:sqlstring})
                            GROUP BY 1, 2
                            ORDER BY 1
                            """,
                            table=False,
                        )
                    ],
                    width=10,
                    height=10,
                ),
            ],
        ),
    ],
)

CSAT = Dashboard(
    uid="ticketflow-csat",
    title="ticketflow / CSAT",
    description="Customer satisfaction after resolution, attributed to the department, agent and tier that resolved.",
    variables=[DEPARTMENT],
    time_from="now-30d",
    rows=[
        Row(
            "Scores",
            [
                Panel(
                    "Average score",
                    "stat",
                    [
                        prom(
                            f"sum(increase(ticketflow_csat_score_sum{{{DEPT}}}[$__range])) / "
                            f"sum(increase(ticketflow_csat_score_count{{{DEPT}}}[$__range]))"
                        )
                    ],
                    "1-5; a good/bad answer counts as 5/1. The first answer per resolution.",
                    width=4,
                    decimals=2,
                    min=1,
                    max=5,
                    thresholds=[(None, "red"), (3.0, "orange"), (4.0, "green")],
                ),
                Panel(
                    "Response rate",
                    "stat",
                    [
                        prom(
                            f"100 * sum(increase(ticketflow_csat_score_count{{{DEPT}}}[$__range])) / "
                            f'sum(increase(ticketflow_tickets_total{{event="resolved",{DEPT}}}[$__range]))'
                        )
                    ],
                    "Rated resolutions out of resolutions in the range.",
                    unit="percent",
                    width=4,
                    decimals=1,
                ),
                Panel(
                    "Surveys sent",
                    "stat",
                    [prom(f"sum(increase(ticketflow_csat_surveys_sent_total{{{DEPT}}}[$__range]))")],
                    width=4,
                    decimals=0,
                ),
                Panel(
                    "Score distribution",
                    "bargauge",
                    [
                        prom(
                            f"sum by (le) (increase(ticketflow_csat_score_bucket{{{DEPT}}}[$__range]))",
                            "{{le}}",
                            instant=True,
                            heatmap=True,
                        )
                    ],
                    "Answers per score.",
                    width=12,
                    options={"orientation": "vertical", "displayMode": "basic"},
                ),
                bars(
                    "Average score by department",
                    f"sum by (department) (increase(ticketflow_csat_score_sum{{{DEPT}}}[$__range])) / "
                    f"sum by (department) (increase(ticketflow_csat_score_count{{{DEPT}}}[$__range]))",
                    "{{department}}",
                    width=12,
                    min=1,
                    max=5,
                ),
                bars(
                    "Average score by agent",
                    f'sum by (agent) (increase(ticketflow_csat_score_sum{{{DEPT},agent!=""}}[$__range])) / '
                    f'sum by (agent) (increase(ticketflow_csat_score_count{{{DEPT},agent!=""}}[$__range]))',
                    "{{agent}}",
                    width=12,
                    min=1,
                    max=5,
                ),
                bars(
                    "Average score by tier",
                    f"sum by (tier) (increase(ticketflow_csat_score_sum{{{DEPT}}}[$__range])) / "
                    f"sum by (tier) (increase(ticketflow_csat_score_count{{{DEPT}}}[$__range]))",
                    "L{{tier}}",
                    width=12,
                    min=1,
                    max=5,
                ),
            ],
        ),
        Row(
            "Survey pages",
            [
                Panel(
                    "Survey page requests by outcome",
                    "timeseries",
                    [
                        prom(
                            "sum by (outcome) (increase(ticketflow_survey_requests_total[$__rate_interval]))",
                            "{{outcome}}",
                        )
                    ],
                    "form_shown without recorded is a customer (or a mail scanner) who opened the link and did not "
                    "answer; expired and invalid_link are links past their window or damaged; unavailable means "
                    "Temporal could not be reached.",
                    width=24,
                ),
            ],
        ),
        Row(
            "Exact ratings (PostgreSQL)",
            [
                Panel(
                    "Ratings by department",
                    "table",
                    [
                        sql(
                            """
                            SELECT department AS "Department", count(*) AS "Ratings",
                                   round(avg(score), 2) AS "Average",
                                   round(100.0 * count(*) FILTER (WHERE score >= 4) / count(*), 1) AS "Positive %",
                                   round(100.0 * count(*) FILTER (WHERE score <= 2) / count(*), 1) AS "Negative %"
                            FROM csat_ratings
                            WHERE $__timeFilter(rated_at) AND department IN (${department:sqlstring})
                            GROUP BY department
                            ORDER BY department
                            """
                        )
                    ],
                    "The latest answer per resolution (a changed rating counts as changed).",
                    width=24,
                ),
            ],
        ),
    ],
)

DEPARTMENT_REPORT = Dashboard(
    uid="ticketflow-department-report",
    title="ticketflow / Department report",
    description="The LiveAgent-style department report from PostgreSQL: created, resolved, answered, first and "
    "next response, ratings and SLA compliance per period. The same SQL function as `ticketflow report`.",
    variables=[SQL_DEPARTMENT, BUCKET],
    time_from="now-30d",
    refresh="5m",
    rows=[
        Row(
            "Department report",
            [
                Panel(
                    "Created and resolved",
                    "timeseries",
                    [
                        sql(
                            """
                            SELECT period_start AS time, sum(created) AS "Created", sum(resolved) AS "Resolved",
                                   sum(answered) AS "Answered"
                            FROM department_report(
                                ARRAY[${department:sqlstring}]::text[], ${bucket:sqlstring}, $__timeFrom(), $__timeTo()
                            )
                            GROUP BY 1
                            ORDER BY 1
                            """,
                            table=False,
                        )
                    ],
                    width=24,
                ),
                Panel(
                    "Report",
                    "table",
                    [
                        sql(
                            """
                            SELECT period_start AS "Period", department AS "Department", created AS "Created",
                                   resolved AS "Resolved", reopened AS "Reopened", answered AS "Answered",
                                   agent_replies AS "Replies",
                                   round(avg_first_response_seconds) AS "Avg first response s",
                                   round(avg_first_response_business_seconds) AS "Avg first response business s",
                                   round(avg_next_response_business_seconds) AS "Avg next response business s",
                                   round(avg_resolution_business_seconds) AS "Avg resolution business s",
                                   ratings AS "Ratings", positive_pct AS "Positive %", negative_pct AS "Negative %",
                                   sla_compliance_pct AS "SLA compliance %"
                            FROM department_report(
                                ARRAY[${department:sqlstring}]::text[], ${bucket:sqlstring}, $__timeFrom(), $__timeTo()
                            )
                            ORDER BY period_start DESC, department
                            """
                        )
                    ],
                    width=24,
                    height=14,
                ),
            ],
        ),
    ],
)

ALL = (OPERATIONS, SLA, ESCALATIONS, CSAT, DEPARTMENT_REPORT)
