-- CSAT answers from the signed survey pages: why a bad answer was bad, and where the answer came from.
ALTER TABLE csat_ratings ADD COLUMN reason text;
ALTER TABLE csat_ratings ADD COLUMN via text NOT NULL DEFAULT 'agent';

-- A relay that refuses a recipient for good (5xx) is recorded with its reply, not retried.
ALTER TABLE outbox ADD COLUMN smtp_code integer;
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
