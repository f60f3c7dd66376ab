-- ticketflow schema v1: tickets, their messages, the audit log, routing, outbox and CSAT.

CREATE TABLE tickets (
    id                  text PRIMARY KEY,
    external_message_id text UNIQUE,
    channel             text NOT NULL,
    subject             text NOT NULL,
    body                text NOT NULL,
    customer_name       text NOT NULL,
    customer_email      text NOT NULL,
    customer_phone      text,
    customer_plan       text,
    customer_type       text NOT NULL,
    customer_region     text,
    customer_language   text,
    attachments         jsonb NOT NULL DEFAULT '[]',
    tags                text[] NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'new',
    language            text,
    category            text,
    priority            text,
    department          text,
    tier                integer NOT NULL DEFAULT 1,
    queue               text,
    assignee            text,
    sla_breached        boolean NOT NULL DEFAULT false,
    categorisation      jsonb,
    created_at          timestamptz NOT NULL,
    first_response_at   timestamptz,
    resolved_at         timestamptz,
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_open_by_department ON tickets (department, status) WHERE status <> 'closed';
CREATE INDEX tickets_created_at ON tickets (created_at);

-- Message bodies live here, not in workflow state: the workflow only knows their sequence number.
CREATE TABLE messages (
    ticket_id           text NOT NULL REFERENCES tickets (id),
    seq                 integer NOT NULL,
    author_kind         text NOT NULL CHECK (author_kind IN ('customer', 'agent', 'system')),
    author              text NOT NULL,
    body                text NOT NULL,
    external_message_id text,
    created_at          timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);

-- One row per state change; (ticket_id, seq) comes from the workflow, so a retried activity
-- cannot write a duplicate and a gap means a lost change.
CREATE TABLE audit_log (
    ticket_id  text NOT NULL REFERENCES tickets (id),
    seq        integer NOT NULL,
    event      text NOT NULL,
    actor      text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);
CREATE INDEX audit_log_event_at ON audit_log (event, at);

-- Round-robin cursor per department queue.
CREATE TABLE queue_cursors (
    queue      text PRIMARY KEY,
    next_index bigint NOT NULL DEFAULT 0
);

-- A routing decision per workflow step, so a retried route never advances the cursor twice.
CREATE TABLE routing_decisions (
    ticket_id  text NOT NULL REFERENCES tickets (id),
    step       text NOT NULL,
    department text NOT NULL,
    tier       integer NOT NULL,
    queue      text NOT NULL,
    agent      text,
    reason     text NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, step)
);

-- Transactional outbox: one row per notification key; a key is sent at most once in effect.
CREATE TABLE outbox (
    key           text PRIMARY KEY,
    ticket_id     text NOT NULL REFERENCES tickets (id),
    template      text NOT NULL,
    recipient     text NOT NULL,
    sender        text NOT NULL,
    subject       text NOT NULL,
    body_text     text NOT NULL,
    body_html     text NOT NULL,
    message_id    text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    -- true from just before an SMTP attempt until its outcome is recorded: a retry that finds it
    -- true knows the previous attempt died mid-way (it may or may not have reached the relay).
    attempt_open  boolean NOT NULL DEFAULT false,
    interrupted   integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX outbox_ticket ON outbox (ticket_id);

CREATE TABLE csat_ratings (
    ticket_id   text NOT NULL REFERENCES tickets (id),
    resolution  integer NOT NULL,
    score       integer NOT NULL CHECK (score BETWEEN 1 AND 5),
    raw         text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    agent       text,
    tier        integer NOT NULL,
    department  text NOT NULL,
    rated_at    timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, resolution)
);
