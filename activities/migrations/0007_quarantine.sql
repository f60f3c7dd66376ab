-- Payloads that failed after they were accepted (a workflow started with a ticket its intake refused),
-- kept for an operator instead of living only in a failed workflow's history until retention ends.
CREATE TABLE quarantine (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,                 -- where it failed: 'workflow' (the intake activity)
    ref         text NOT NULL,                 -- the failed run: workflow id and run id
    payload     text NOT NULL,                 -- the payload as JSON text (text keeps even a \u0000 escape)
    error       text NOT NULL,                 -- the field-level message
    received_at timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'retried', 'discarded')),
    attempts    integer NOT NULL DEFAULT 0,    -- operator retries, failed ones included
    last_error  text,
    ticket_id   text,                          -- the ticket a successful retry opened
    resolved_at timestamptz,
    resolved_by text,
    note        text,
    UNIQUE (source, ref)
);
CREATE INDEX quarantine_held ON quarantine (received_at) WHERE status = 'held';
