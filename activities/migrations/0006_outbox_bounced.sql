-- A mail the relay accepted and later reported undeliverable (a DSN at the mail intake).
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check CHECK (status IN ('pending', 'sent', 'failed', 'bounced'));
