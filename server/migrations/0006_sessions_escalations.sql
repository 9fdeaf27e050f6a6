-- Runtime sessions and escalations as runtimes report them on the control channel
-- (`session_started`, `session_ended`, `escalation_triggered`), and the user agent of people's
-- login sessions. Same isolation as every other table: org_id, row-level security ENABLE + FORCE.
-- Nothing here holds prompt text: only the fields the server picks out of each message.

-- One row per runtime and session id, kept up to date by the session messages. A session id
-- can be started again after it ended (the daemon forgets ended sessions): started_at stays the
-- first start, last_started_at is the latest, and ended_at is cleared by a later start.
CREATE TABLE runtime_sessions (
    org_id             text NOT NULL,
    runtime_id         text NOT NULL,
    session_id         text NOT NULL,
    agent_id           text,
    tool_id            text,
    repo               text,
    branch             text,
    ci_status          text,
    session_tags       text[] NOT NULL DEFAULT '{}',
    -- From the runtime's clock (the message's timestamp); NULL when only the end was heard.
    started_at         timestamptz,
    last_started_at    timestamptz,
    ended_at           timestamptz,
    -- The decision count the runtime reported when the session ended.
    decisions_at_end   bigint,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, session_id),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);
CREATE INDEX runtime_sessions_by_start ON runtime_sessions (org_id, started_at DESC);

-- Every decision a runtime answered `require_human`, once per trace entry (runtime, seq): a
-- message sent again is a no-op. Append-only for the server's role.
CREATE TABLE escalations (
    org_id          text NOT NULL,
    runtime_id      text NOT NULL,
    -- The decision's position in the runtime's trace, and its hash.
    seq             bigint NOT NULL CHECK (seq >= 0),
    entry_hash      text NOT NULL,
    session_id      text NOT NULL,
    agent_id        text,
    prompt_id       text,
    prompt_type     text,
    matched_rule    text,
    policy_action   text,
    risk_level      text,
    policy_hash     text,
    -- The message's timestamp (the runtime's clock), or when it arrived if that did not parse.
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, seq),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);
-- The list's order (newest first) with and without one runtime fixed, and a session's count.
CREATE INDEX escalations_by_time ON escalations (org_id, occurred_at DESC, runtime_id DESC, seq DESC);
CREATE INDEX escalations_by_runtime ON escalations (org_id, runtime_id, occurred_at DESC, seq DESC);
CREATE INDEX escalations_by_session ON escalations (org_id, runtime_id, session_id);

-- What a person sees of their own sessions: the browser or tool that opened it (bounded).
ALTER TABLE human_sessions ADD COLUMN user_agent text NOT NULL DEFAULT ''
    CHECK (length(user_agent) <= 256);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['runtime_sessions', 'escalations']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (org_id = current_setting(''atlasbridge.org_id'', true))
                 WITH CHECK (org_id = current_setting(''atlasbridge.org_id'', true))', t);
    END LOOP;
END
$$;
