-- Each agent's number of open tickets, kept by a trigger, so that routing reads the loads of a department's agents
-- by primary key. Before this, least_loaded and skills routing counted every open ticket of the candidates in the
-- opening's transaction: 1.5 ms at 10,000 open tickets and 27 ms at 50,000 (a Seq Scan: most rows were open),
-- growing with the backlog (bench.scale, issue 8). A trigger, not the activities, keeps the count: every writer
-- of `tickets` (an older worker during a rolling upgrade, an operator's UPDATE) keeps it right.

-- Writers of `tickets` wait while this runs (a second or so at a million tickets): no ticket changes between the
-- count below and the trigger that takes over from it.
LOCK TABLE tickets IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE agent_open_tickets (
    agent text PRIMARY KEY,
    open integer NOT NULL CHECK (open >= 0)
);

CREATE FUNCTION agent_open_tickets_follow() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
DECLARE
    was text := NULL;  -- the agent the row counted for before the statement
    now_ text := NULL;  -- and after it
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.assignee IS NOT NULL AND OLD.status IN ('new', 'open', 'pending') THEN
        was := OLD.assignee;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.assignee IS NOT NULL AND NEW.status IN ('new', 'open', 'pending') THEN
        now_ := NEW.assignee;
    END IF;
    IF was IS NOT DISTINCT FROM now_ THEN
        RETURN NULL;
    END IF;
    -- Two agents' rows in name order, so that two transfers in opposite directions cannot deadlock.
    IF was IS NOT NULL AND (now_ IS NULL OR was < now_) THEN
        UPDATE agent_open_tickets SET open = open - 1 WHERE agent = was;
        was := NULL;
    END IF;
    IF now_ IS NOT NULL THEN
        INSERT INTO agent_open_tickets AS a (agent, open) VALUES (now_, 1)
        ON CONFLICT (agent) DO UPDATE SET open = a.open + 1;
    END IF;
    IF was IS NOT NULL THEN
        UPDATE agent_open_tickets SET open = open - 1 WHERE agent = was;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER tickets_agent_open_tickets
AFTER INSERT OR DELETE OR UPDATE OF status, assignee ON tickets
FOR EACH ROW EXECUTE FUNCTION agent_open_tickets_follow();

INSERT INTO agent_open_tickets (agent, open)
SELECT assignee, count(*) FROM tickets
WHERE assignee IS NOT NULL AND status IN ('new', 'open', 'pending')
GROUP BY assignee;
