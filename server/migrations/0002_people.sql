-- People: users of an organisation with a role, their login sessions, the throttle on failed
-- logins, and OIDC logins in flight. Same isolation as 0001: every table carries org_id, and
-- row-level security (ENABLE + FORCE) shows and accepts only the rows of the organisation set
-- with SET LOCAL atlasbridge.org_id.

CREATE TABLE users (
    org_id         text NOT NULL REFERENCES orgs (org_id),
    user_id        text NOT NULL,
    -- Stored lower-cased and trimmed: one account per address and organisation.
    email          text NOT NULL CHECK (email = lower(btrim(email)) AND length(email) BETWEEN 3 AND 254),
    display_name   text NOT NULL DEFAULT '',
    role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'owner')),
    -- argon2id PHC string; NULL: no password login (SSO only).
    password_hash  text,
    -- The OIDC identity linked to this user; NULL until the first SSO login.
    oidc_issuer    text,
    oidc_subject   text,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id),
    UNIQUE (org_id, email),
    UNIQUE (org_id, oidc_issuer, oidc_subject),
    CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL))
);

-- Login sessions of people. Only SHA-256 of the token is kept (see docs/server.md).
CREATE TABLE human_sessions (
    org_id         text NOT NULL,
    session_id     text NOT NULL,
    token_sha256   text NOT NULL CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    user_id        text NOT NULL,
    -- The synchronizer token a cookie-authenticated state-changing request must echo.
    csrf_token     text NOT NULL,
    -- How the session was opened: 'password' or 'oidc'.
    via            text NOT NULL CHECK (via IN ('password', 'oidc')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Absolute expiry; the idle expiry is last_used_at + the configured idle time.
    expires_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    PRIMARY KEY (org_id, session_id),
    UNIQUE (org_id, token_sha256),
    FOREIGN KEY (org_id, user_id) REFERENCES users (org_id, user_id)
);
CREATE INDEX human_sessions_by_user ON human_sessions (org_id, user_id);

-- Failed password logins per address, in fixed windows, shared by every replica. Kept for
-- addresses that have no account too (the answer must not differ), so old windows are pruned.
CREATE TABLE login_throttle (
    org_id         text NOT NULL,
    email          text NOT NULL,
    window_start   timestamptz NOT NULL DEFAULT now(),
    failures       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, email)
);
CREATE INDEX login_throttle_by_age ON login_throttle (org_id, window_start);

-- OIDC logins between the redirect to the provider and its callback, so that any replica can
-- finish a login another one started. The state is stored hashed; each row is used once.
CREATE TABLE oidc_logins (
    org_id          text NOT NULL REFERENCES orgs (org_id),
    state_sha256    text NOT NULL CHECK (state_sha256 ~ '^[0-9a-f]{64}$'),
    nonce           text NOT NULL,
    pkce_verifier   text NOT NULL,
    -- SHA-256 of the value of the browser-binding cookie set when the login started: a
    -- callback from another browser (a login CSRF) does not match.
    binding_sha256  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (org_id, state_sha256)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'human_sessions', 'login_throttle', 'oidc_logins']
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
