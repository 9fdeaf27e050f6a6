-- The fields people search decisions and audit events by, taken out of the entry's JSON into
-- real columns at ingest, with composite indexes that serve each filter together with the
-- order of the keyset cursor (occurred_at DESC, runtime_id DESC, seq DESC). A search on ten
-- million entries then reads one index range instead of the table.
--
-- occurred_at: the entry's own `timestamp` (when the decision was made or the event happened),
--   or, when a runtime sent none that parses, the time the server received it;
-- session_id, agent_id, action (= action_taken: what the agent was told), risk (= risk_level):
--   decisions (stream 'trace') only;
-- event_type: audit events (stream 'audit') only.
-- Values longer than 512 bytes are not extracted (NULL): an index entry has a size limit, and a
-- hostile runtime must not be able to make its own batches fail.

ALTER TABLE entries
    ADD COLUMN occurred_at timestamptz,
    ADD COLUMN session_id  text,
    ADD COLUMN agent_id    text,
    ADD COLUMN action      text,
    ADD COLUMN risk        text,
    ADD COLUMN event_type  text;

-- Existing rows: read with a cast that cannot fail the migration.
CREATE FUNCTION pg_temp.entry_time(body jsonb, fallback timestamptz) RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    RETURN COALESCE((body ->> 'timestamp')::timestamptz, fallback);
EXCEPTION WHEN others THEN
    RETURN fallback;
END
$$;

CREATE FUNCTION pg_temp.short(value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN octet_length(value) <= 512 THEN value END $$;

-- FORCE ROW LEVEL SECURITY holds for the owner too, and no organisation is set here: lift it
-- for the backfill only, inside this transaction, so no other session ever sees it lifted.
ALTER TABLE entries NO FORCE ROW LEVEL SECURITY;
UPDATE entries SET
    occurred_at = pg_temp.entry_time(body, received_at),
    session_id  = CASE WHEN stream = 'trace' THEN pg_temp.short(body ->> 'session_id') END,
    agent_id    = CASE WHEN stream = 'trace' THEN pg_temp.short(body ->> 'agent_id') END,
    action      = CASE WHEN stream = 'trace' THEN pg_temp.short(body ->> 'action_taken') END,
    risk        = CASE WHEN stream = 'trace' THEN pg_temp.short(body ->> 'risk_level') END,
    event_type  = CASE WHEN stream = 'audit' THEN pg_temp.short(body ->> 'event_type') END;
ALTER TABLE entries FORCE ROW LEVEL SECURITY;

ALTER TABLE entries ALTER COLUMN occurred_at SET NOT NULL;

-- Decisions: newest first, and per filter.
CREATE INDEX entries_decisions_by_time ON entries
    (org_id, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'trace';
CREATE INDEX entries_decisions_by_runtime ON entries
    (org_id, runtime_id, occurred_at DESC, seq DESC) WHERE stream = 'trace';
CREATE INDEX entries_decisions_by_session ON entries
    (org_id, session_id, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'trace';
CREATE INDEX entries_decisions_by_agent ON entries
    (org_id, agent_id, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'trace';
CREATE INDEX entries_decisions_by_risk ON entries
    (org_id, risk, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'trace';
CREATE INDEX entries_decisions_by_action ON entries
    (org_id, action, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'trace';

-- Audit events: newest first, and per runtime.
CREATE INDEX entries_audit_by_time ON entries
    (org_id, occurred_at DESC, runtime_id DESC, seq DESC) WHERE stream = 'audit';
CREATE INDEX entries_audit_by_runtime ON entries
    (org_id, runtime_id, occurred_at DESC, seq DESC) WHERE stream = 'audit';
