-- Wake-ups across nodes (issue 9): a statement that queues outbox rows, records a concern or
-- acknowledges one sends NOTIFY qaloop_wake, payload the table's schema (several qaloop
-- schemas may share a database), so every `serve` listening (src/store/wake.rs) looks at once
-- instead of at its next timed wake-up. NOTIFY is transactional: it is delivered when the
-- writer's transaction commits, never for one rolled back, and once per transaction however
-- many statements sent it.
--
-- Statement triggers with a transition table notify only when a row really changed: a
-- statement that changes none (ON CONFLICT DO NOTHING on a round already queued, an
-- acknowledgement that came second) must stay silent, or two nodes could wake each other for
-- ever. Outbox updates (claims, sent, failed) notify nothing for the same reason; a row re-queued
-- by `qaloop outbox retry` is sent at the next timed look (within 5 minutes).
--
-- SQLite needs no migration: there the loop notices writes by the database file and its WAL.
CREATE FUNCTION qaloop_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed) THEN
        PERFORM pg_notify('qaloop_wake', TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_wake AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qaloop_wake();
CREATE TRIGGER concerns_raised_wake AFTER INSERT ON concerns
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qaloop_wake();
CREATE TRIGGER concerns_acknowledged_wake AFTER UPDATE ON concerns
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qaloop_wake();
