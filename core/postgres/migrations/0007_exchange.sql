-- Exchange: the rewards catalog, its orders, and the partner merchants that
-- accept points, with their API keys and refunds.

CREATE TABLE rewards (
    id                    uuid PRIMARY KEY,
    program_id            uuid NOT NULL REFERENCES programs (id),
    code                  text NOT NULL,
    name                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    points                bigint NOT NULL CHECK (points > 0),
    money_points          bigint CHECK (money_points > 0),
    money_amount          numeric(21, 6) CHECK (money_amount > 0),
    -- NULL is unlimited.
    stock                 bigint CHECK (stock >= 0),
    valid_from            timestamptz,
    valid_until           timestamptz,
    per_member_limit      bigint CHECK (per_member_limit > 0),
    program_limit         bigint CHECK (program_limit > 0),
    -- Units redeemed and not cancelled, program-wide.
    redeemed              bigint NOT NULL DEFAULT 0 CHECK (redeemed >= 0),
    tiers                 text[] NOT NULL DEFAULT '{}',
    partner               text NOT NULL DEFAULT '',
    cancel_window_seconds integer NOT NULL DEFAULT 0 CHECK (cancel_window_seconds >= 0),
    active                boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CONSTRAINT rewards_program_code_key UNIQUE (program_id, code)
);

CREATE TABLE reward_orders (
    id               uuid PRIMARY KEY,
    program_id       uuid NOT NULL REFERENCES programs (id),
    reward_id        uuid NOT NULL REFERENCES rewards (id),
    member_id        uuid NOT NULL REFERENCES members (id),
    source           text NOT NULL,
    txn_id           text NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    points           bigint NOT NULL CHECK (points > 0),
    money_amount     numeric(21, 6),
    voucher          text NOT NULL,
    posting_id       bigint NOT NULL REFERENCES postings (id),
    status           text NOT NULL DEFAULT 'placed' CHECK (status IN ('placed', 'cancelled')),
    cancel_until     timestamptz,
    created_at       timestamptz NOT NULL,
    cancelled_at     timestamptz,
    cancel_posting   bigint REFERENCES postings (id),
    CONSTRAINT reward_orders_voucher_key UNIQUE (voucher),
    CONSTRAINT reward_orders_source_txn_key UNIQUE (source, txn_id)
);
CREATE INDEX reward_orders_member_idx ON reward_orders (member_id, reward_id)
    WHERE status = 'placed';

CREATE TABLE partners (
    id               uuid PRIMARY KEY,
    program_id       uuid NOT NULL REFERENCES programs (id),
    -- Global, since it names the partner's command source "partner:<code>".
    code             text NOT NULL,
    name             text NOT NULL,
    currency         text NOT NULL,
    point_value      numeric(21, 6) NOT NULL CHECK (point_value >= 0),
    can_burn         boolean NOT NULL DEFAULT false,
    can_earn         boolean NOT NULL DEFAULT false,
    max_burn_points  bigint NOT NULL DEFAULT 0 CHECK (max_burn_points >= 0),
    max_earn_amount  numeric(21, 6),
    hold_ttl_seconds integer NOT NULL DEFAULT 0 CHECK (hold_ttl_seconds >= 0),
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT partners_code_key UNIQUE (code)
);

-- API keys of partners: only the SHA-256 digest of a 256-bit random key.
CREATE TABLE partner_keys (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id),
    prefix      text NOT NULL,
    digest      bytea NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CONSTRAINT partner_keys_digest_key UNIQUE (digest)
);

-- Refunds of captured partner payments. The sum per hold never exceeds what
-- the hold captured; the ledger checks it under the hold's row lock.
CREATE TABLE partner_refunds (
    id          uuid PRIMARY KEY,
    hold_id     uuid NOT NULL REFERENCES holds (id),
    source      text NOT NULL,
    txn_id      text NOT NULL,
    points      bigint NOT NULL CHECK (points > 0),
    posting_id  bigint NOT NULL REFERENCES postings (id),
    created_at  timestamptz NOT NULL,
    CONSTRAINT partner_refunds_source_txn_key UNIQUE (source, txn_id)
);
CREATE INDEX partner_refunds_hold_idx ON partner_refunds (hold_id);
CREATE INDEX partner_refunds_created_idx ON partner_refunds (source, created_at);
-- Settlement reads a partner's holds by source and time.
CREATE INDEX holds_source_closed_idx ON holds (source, closed_at) WHERE captured > 0;
