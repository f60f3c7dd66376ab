-- Indexes two hot-path queries of the activities were missing (found by bench/database.py, issue 8).

-- categorise asks, for every new ticket, whether it is the customer's first (the `first_time` priority rule):
-- without this it read every ticket with a Seq Scan, longest for a new customer, who has none to find.
CREATE INDEX tickets_customer_email ON tickets (customer_email, created_at);

-- route counts each candidate agent's open tickets in least_loaded and skills departments: from this index alone
-- (ids included for the `id <>` test) instead of fetching every open ticket of every department.
CREATE INDEX tickets_open_by_assignee ON tickets (assignee) INCLUDE (id) WHERE status IN ('new', 'open', 'pending');
