-- The policy registry: policies of an organisation with numbered, signed versions; their
-- distributions to runtimes; and what runtimes report they run (the loaded policy and the local
-- pins). Same isolation as 0001: every table carries org_id, and row-level security (ENABLE +
-- FORCE) shows and accepts only the rows of the organisation set with SET LOCAL
-- atlasbridge.org_id.
--
-- Who did something is recorded as (kind, id): kind 'user' with a user_id, or 'runtime' with a
-- runtime_id (an upload by `atlasbridge cloud policy push`).

CREATE TABLE policies (
    org_id           text NOT NULL REFERENCES orgs (org_id),
    -- The policy's own `name` (every version's YAML names it): printable, 1 to 128 characters.
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 128 AND name !~ '[[:cntrl:]]'),
    description      text NOT NULL DEFAULT '',
    -- The highest version number given out. A new version takes latest_version + 1 by updating
    -- this row, whose lock serialises concurrent uploads of one policy; a rolled-back upload
    -- rolls the counter back too. So numbers have no gaps and are never reused.
    latest_version   integer NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by_kind  text NOT NULL CHECK (created_by_kind IN ('user', 'runtime')),
    created_by       text NOT NULL,
    -- Archived policies take no new versions and no new distributions; nothing is deleted
    -- (traces name policies by hash, so the versions stay readable).
    archived_at      timestamptz,
    archived_by      text,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE policy_versions (
    org_id            text NOT NULL,
    name              text NOT NULL,
    version           integer NOT NULL CHECK (version >= 1),
    -- The YAML exactly as uploaded (comments and all).
    yaml              text NOT NULL,
    -- policy_hash of policy-language.md, computed by the server with the runtimes' own loader.
    content_hash      text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    uploaded_by_kind  text NOT NULL CHECK (uploaded_by_kind IN ('user', 'runtime')),
    uploaded_by       text NOT NULL,
    -- A runtime's upload is signed by its identity key over the JCS of {content_hash,
    -- runtime_id}: kept as the evidence of who uploaded it. NULL for people's uploads.
    upload_signature  text,
    uploaded_at       timestamptz NOT NULL DEFAULT now(),
    -- The server's Ed25519 signature over the JCS of {name, version, content_hash, signed_at}
    -- (cloud.md), with signed_at kept as the exact string signed, and the public key that made it.
    signed_at         text NOT NULL,
    signature         text NOT NULL,
    signer_key        text NOT NULL,
    PRIMARY KEY (org_id, name, version),
    FOREIGN KEY (org_id, name) REFERENCES policies (org_id, name)
);
CREATE INDEX policy_versions_by_hash ON policy_versions (org_id, content_hash);

-- One version sent to all of the organisation's runtimes, or to the runtimes named in
-- policy_distribution_targets. A runtime's policy is the newest distribution that covers it.
CREATE TABLE policy_distributions (
    org_id           text NOT NULL,
    distribution_id  bigint GENERATED ALWAYS AS IDENTITY,
    name             text NOT NULL,
    version          integer NOT NULL,
    target           text NOT NULL CHECK (target IN ('all', 'runtimes')),
    distributed_at   timestamptz NOT NULL DEFAULT now(),
    distributed_by   text NOT NULL,
    PRIMARY KEY (org_id, distribution_id),
    FOREIGN KEY (org_id, name, version) REFERENCES policy_versions (org_id, name, version)
);
CREATE INDEX policy_distributions_by_policy ON policy_distributions (org_id, name, distribution_id DESC);
CREATE INDEX policy_distributions_to_all ON policy_distributions (org_id, distribution_id DESC)
    WHERE target = 'all';

CREATE TABLE policy_distribution_targets (
    org_id           text NOT NULL,
    distribution_id  bigint NOT NULL,
    runtime_id       text NOT NULL,
    PRIMARY KEY (org_id, distribution_id, runtime_id),
    FOREIGN KEY (org_id, distribution_id) REFERENCES policy_distributions (org_id, distribution_id),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);
CREATE INDEX policy_distribution_targets_by_runtime
    ON policy_distribution_targets (org_id, runtime_id, distribution_id DESC);

-- The policy a runtime last reported loaded (`policy_loaded`), as it reported it.
CREATE TABLE runtime_policies (
    org_id          text NOT NULL,
    runtime_id      text NOT NULL,
    name            text NOT NULL,
    policy_version  text NOT NULL,
    policy_hash     text NOT NULL,
    -- 'file' or 'builtin', as the runtime says.
    source          text NOT NULL,
    loaded_at       text NOT NULL,
    reported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

-- The local pins a runtime last reported: an agent or a session locked to a policy hash.
-- Replaced as a whole by each report.
CREATE TABLE policy_pins (
    org_id       text NOT NULL,
    runtime_id   text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('agent', 'session')),
    scope_id     text NOT NULL,
    policy_hash  text NOT NULL,
    reported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, runtime_id, scope, scope_id),
    FOREIGN KEY (org_id, runtime_id) REFERENCES runtimes (org_id, runtime_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['policies', 'policy_versions', 'policy_distributions',
                             'policy_distribution_targets', 'runtime_policies', 'policy_pins']
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
