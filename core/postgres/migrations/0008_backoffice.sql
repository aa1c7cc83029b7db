-- Back office: the people who run programs from a browser, their sessions,
-- adjustments waiting for a second person, and the audit log of every change.

CREATE TABLE bo_users (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role          text NOT NULL
                  CHECK (role IN ('administrator', 'operator', 'analyst', 'auditor')),
    password_hash text NOT NULL,
    failed_count  integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Sessions are found by the SHA-256 of the cookie value: the table never
-- holds a value a thief could present.
CREATE TABLE bo_sessions (
    id_hash    bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES bo_users (id) ON DELETE CASCADE,
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX bo_sessions_expiry ON bo_sessions (expires_at);

CREATE TABLE bo_pending_adjustments (
    id           bigserial PRIMARY KEY,
    program      text NOT NULL,
    member       text NOT NULL,
    points       bigint NOT NULL CHECK (points <> 0),
    reason       text NOT NULL CHECK (reason <> ''),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'applied', 'refused', 'rejected', 'submitted')),
    decided_by   text,
    decided_at   timestamptz,
    outcome      text NOT NULL DEFAULT '',
    -- Four eyes: whoever sends a large adjustment to the ledger did not ask for it.
    CHECK (status IN ('pending', 'rejected') OR decided_by <> requested_by)
);
CREATE INDEX bo_pending_adjustments_open ON bo_pending_adjustments (status, id);

CREATE TABLE bo_audit (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL DEFAULT '',
    before jsonb,
    after  jsonb
);
CREATE INDEX bo_audit_at ON bo_audit (at DESC);
