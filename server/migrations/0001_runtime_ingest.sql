-- The foundation of issue 8: organisations, API keys, the runtime registry, the ingested chains,
-- and what the server witnessed. Every table carries org_id and is isolated by row-level
-- security on the setting `atlasbridge.org_id`, which each request's transaction sets with
-- SET LOCAL (set_config(..., true)); FORCE makes the policies apply to the table owner too.

CREATE TABLE orgs (
    org_id      text PRIMARY KEY CHECK (org_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are `abk_<key_id>_<secret>`; only SHA-256 of the secret is stored (see docs/server.md).
CREATE TABLE api_keys (
    org_id         text NOT NULL REFERENCES orgs (org_id),
    key_id         text NOT NULL,
    secret_sha256  text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    label          text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    PRIMARY KEY (org_id, key_id)
);

CREATE TABLE runtimes (
    org_id                 text NOT NULL REFERENCES orgs (org_id),
    runtime_id             text NOT NULL,
    first_seen             timestamptz NOT NULL DEFAULT now(),
    last_seen              timestamptz NOT NULL DEFAULT now(),
    last_heartbeat         timestamptz,
    -- Measured between the last two heartbeats; NULL until there were two.
    heartbeat_interval_ms  bigint,
    agent_version          text NOT NULL DEFAULT '',
    edition                text NOT NULL DEFAULT '',
    -- 'ok' until the runtime shows the witness a head that goes backwards or forks, or a
    -- checkpoint that does not verify; then the first such finding stays (see runtime_flags).
    witness_status         text NOT NULL DEFAULT 'ok'
        CHECK (witness_status IN ('ok', 'rewound', 'forked', 'bad_checkpoint')),
    witness_detail         text NOT NULL DEFAULT '',
    PRIMARY KEY (org_id, runtime_id)
);

-- One row per runtime and stream: how far the server's copy is contiguous, and its verdict.
CREATE TABLE chains (
    org_id          text NOT NULL,
    runtime_id      text NOT NULL,
    stream          text NOT NULL CHECK (stream IN ('trace', 'audit')),
    -- Entries 0 .. next_seq-1 are all held; head_hash is the hash of entry next_seq-1.
    next_seq        bigint NOT NULL DEFAULT 0,
    head_hash       text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
    -- The highest seq held (beyond next_seq when there is a gap).
    max_seq         bigint,
    status          text NOT NULL DEFAULT 'continuous' CHECK (status IN ('continuous', 'gap', 'broken')),
    gap_from        bigint,
    gap_to          bigint,
    -- Sticky: the first bad seq and why (hash_mismatch, prev_mismatch, fork, malformed).
    broken_at       bigint,
    broken_kind     text,
    broken_detail   text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, stream),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

-- The entries as received (metadata only: prompt text never leaves a runtime).
CREATE TABLE entries (
    org_id       text NOT NULL,
    runtime_id   text NOT NULL,
    stream       text NOT NULL CHECK (stream IN ('trace', 'audit')),
    seq          bigint NOT NULL CHECK (seq >= 0),
    entry_id     text NOT NULL,
    entry_hash   text NOT NULL,
    prev_hash    text NOT NULL,
    -- Whether entry_hash is the hash of the entry's content (the link is judged in chains).
    hash_ok      boolean NOT NULL,
    body         jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, stream, seq),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

-- Heads the runtime showed the witness (hello, heartbeats, checkpoints).
CREATE TABLE witnessed_heads (
    org_id      text NOT NULL,
    runtime_id  text NOT NULL,
    stream      text NOT NULL CHECK (stream IN ('trace', 'audit')),
    seq         bigint NOT NULL,
    entry_hash  text NOT NULL,
    source      text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, stream, seq),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

-- Signed checkpoints, with the server's verdict on each.
CREATE TABLE checkpoints (
    org_id                text NOT NULL,
    runtime_id            text NOT NULL,
    checkpoint_seq        bigint NOT NULL,
    checkpoint_hash       text NOT NULL,
    prev_checkpoint_hash  text NOT NULL,
    epoch                 bigint NOT NULL,
    -- The key of this checkpoint's epoch (carried when it opens the epoch, else inherited):
    -- what the next checkpoint must be signed with.
    epoch_key             text,
    seq                   bigint,
    entry_hash            text NOT NULL,
    -- 'verified' (signature chain from a known key), 'unverifiable' (its predecessor is not
    -- held, so neither is the key it is signed with), or 'bad' (see runtime_flags).
    verdict               text NOT NULL CHECK (verdict IN ('verified', 'unverifiable', 'bad')),
    body                  jsonb NOT NULL,
    received_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, checkpoint_seq),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

-- Everything the server flagged about a runtime, append-only.
CREATE TABLE runtime_flags (
    org_id      text NOT NULL,
    runtime_id  text NOT NULL,
    flag_id     bigint GENERATED ALWAYS AS IDENTITY,
    kind        text NOT NULL,
    detail      text NOT NULL,
    flagged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, flag_id),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orgs', 'api_keys', 'runtimes', 'chains', 'entries',
                             'witnessed_heads', 'checkpoints', 'runtime_flags']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        -- current_setting(..., true) is NULL when unset: no org set, no rows, no writes.
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (org_id = current_setting(''atlasbridge.org_id'', true))
                 WITH CHECK (org_id = current_setting(''atlasbridge.org_id'', true))', t);
    END LOOP;
END
$$;
