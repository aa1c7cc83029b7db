-- Conversions of points into other companies' programs. The conversions
-- table is the outbox of the outbound calls: a row is written in the same
-- transaction as the hold on the member's points, and stays pending until
-- the other program confirmed or refused for sure.

CREATE TABLE external_programs (
    program_id     uuid NOT NULL REFERENCES programs (id),
    code           text NOT NULL,
    name           text NOT NULL,
    -- Units of the other program per one of our points.
    ratio          numeric(20, 6) NOT NULL CHECK (ratio > 0),
    rounding       text NOT NULL,
    min_points     bigint NOT NULL CHECK (min_points > 0),
    max_points     bigint NOT NULL CHECK (max_points >= min_points),
    -- Per member, per local day and month of the program; 0 is no limit.
    daily_limit    bigint NOT NULL DEFAULT 0 CHECK (daily_limit >= 0),
    monthly_limit  bigint NOT NULL DEFAULT 0 CHECK (monthly_limit >= 0),
    identify       text NOT NULL CHECK (identify IN ('customer_ref', 'account_id')),
    account_pattern text NOT NULL DEFAULT '',
    flavour        text NOT NULL CHECK (flavour IN ('http', 'file')),
    endpoint       text NOT NULL DEFAULT '',
    -- The secret sent to the partner, encrypted by Puntos before it is
    -- stored: enc:v1:<key id>:<base64> (see internal/secrets). Rows written
    -- before encryption are encrypted at the core's next start with a key.
    credentials    text NOT NULL DEFAULT '',
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, code)
);

CREATE TABLE conversions (
    id              uuid PRIMARY KEY,
    program_id      uuid NOT NULL REFERENCES programs (id),
    member_id       uuid NOT NULL REFERENCES members (id),
    member_ref      text NOT NULL,
    external_code   text NOT NULL,
    points          bigint NOT NULL CHECK (points > 0),
    amount          bigint NOT NULL CHECK (amount > 0),
    account_id      text NOT NULL,
    -- The caller's request, and the hold it made (source 'conversion').
    source          text NOT NULL,
    txn_id          text NOT NULL,
    hold_txn_id     text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'confirmed', 'refused')),
    reference       text NOT NULL DEFAULT '',
    refusal_code    text NOT NULL DEFAULT '',
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    next_attempt_at timestamptz NOT NULL,
    requested_at    timestamptz NOT NULL,
    resolved_at     timestamptz,
    FOREIGN KEY (program_id, external_code) REFERENCES external_programs (program_id, code)
);
CREATE INDEX conversions_due_idx ON conversions (next_attempt_at) WHERE status = 'pending';
CREATE INDEX conversions_limits_idx ON conversions (member_id, external_code, requested_at)
    WHERE status <> 'refused';
