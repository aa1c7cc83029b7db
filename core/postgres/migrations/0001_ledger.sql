-- The points ledger. Postings are append-only; a member's balance columns are
-- a cache that always equals the sums of its postings, and of its lots.

CREATE TABLE programs (
    id               uuid PRIMARY KEY,
    code             text NOT NULL UNIQUE,
    name             text NOT NULL,
    time_zone        text NOT NULL DEFAULT 'America/Santiago',
    currency         text NOT NULL DEFAULT 'CLP',
    -- Stand-in conversion until the rules engine: points per currency unit.
    points_per_unit  numeric(20, 6) NOT NULL DEFAULT 1,
    accrual_rounding text NOT NULL DEFAULT 'down',
    -- Expiry policy: none, or a lifetime in days or months from the earning
    -- date, rounded up to the end of that day or month in time_zone.
    expiry_unit      text NOT NULL DEFAULT 'none'
                     CHECK (expiry_unit IN ('none', 'days', 'months')),
    expiry_length    integer NOT NULL DEFAULT 0 CHECK (expiry_length >= 0),
    expiry_round     text NOT NULL DEFAULT 'day' CHECK (expiry_round IN ('day', 'month')),
    pending_days     integer NOT NULL DEFAULT 0 CHECK (pending_days >= 0),
    -- What a clawback does with points already spent: 'forbid' writes the
    -- shortfall off, 'allow' lets the balance go negative until repaid.
    negative_balance text NOT NULL DEFAULT 'forbid'
                     CHECK (negative_balance IN ('forbid', 'allow')),
    hold_ttl_seconds integer NOT NULL DEFAULT 900 CHECK (hold_ttl_seconds > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE members (
    id           uuid PRIMARY KEY,
    program_id   uuid NOT NULL REFERENCES programs (id),
    customer_ref text NOT NULL,
    status       text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'suspended', 'closed', 'merged')),
    channel      text NOT NULL DEFAULT '',
    enrolled_at  timestamptz NOT NULL,
    merged_into  uuid REFERENCES members (id),
    available    bigint NOT NULL DEFAULT 0 CHECK (available > -1000000000000000),
    pending      bigint NOT NULL DEFAULT 0 CHECK (pending >= 0),
    held         bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT members_program_ref_key UNIQUE (program_id, customer_ref)
);

CREATE TABLE postings (
    id            bigserial PRIMARY KEY,
    program_id    uuid NOT NULL REFERENCES programs (id),
    member_id     uuid NOT NULL REFERENCES members (id),
    kind          text NOT NULL CHECK (kind IN (
                    'accrual', 'credit', 'redemption', 'hold', 'capture', 'release',
                    'reversal', 'adjustment', 'expiry', 'maturation',
                    'transfer_out', 'transfer_in', 'forfeit', 'merge_out', 'merge_in')),
    -- Changes to the member's three figures.
    points        bigint NOT NULL,
    held_delta    bigint NOT NULL DEFAULT 0,
    pending_delta bigint NOT NULL DEFAULT 0,
    source        text NOT NULL,
    txn_id        text,
    command_id    uuid,
    reason        text NOT NULL DEFAULT '',
    rule_version  text NOT NULL DEFAULT '',
    actor         text NOT NULL DEFAULT '',
    partner       text NOT NULL DEFAULT '',
    channel       text NOT NULL DEFAULT '',
    reverses_id   bigint REFERENCES postings (id),
    hold_id       uuid,
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL
);
-- A posting is reversed at most once: the database says so, not a lookup.
CREATE UNIQUE INDEX postings_reverses_key ON postings (reverses_id) WHERE reverses_id IS NOT NULL;
CREATE INDEX postings_member_idx ON postings (member_id, id);

CREATE FUNCTION puntos_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION puntos_append_only();

CREATE TABLE lots (
    id             bigserial PRIMARY KEY,
    member_id      uuid NOT NULL REFERENCES members (id),
    posting_id     bigint NOT NULL REFERENCES postings (id),
    earned_at      timestamptz NOT NULL,
    spendable_from timestamptz NOT NULL,
    expires_at     timestamptz,
    pending        boolean NOT NULL DEFAULT false,
    original       bigint NOT NULL CHECK (original > 0),
    remaining      bigint NOT NULL,
    -- Part of remaining reserved by open holds.
    held           bigint NOT NULL DEFAULT 0,
    CHECK (remaining >= 0 AND remaining <= original),
    CHECK (held >= 0 AND held <= remaining)
);
CREATE INDEX lots_member_fifo_idx ON lots (member_id, expires_at, earned_at, id)
    WHERE remaining > 0;
CREATE INDEX lots_expiry_idx ON lots (expires_at) WHERE remaining > held;
CREATE INDEX lots_pending_idx ON lots (spendable_from) WHERE pending;

-- Which lots a posting took from or gave back to, and how much.
CREATE TABLE posting_lots (
    posting_id bigint NOT NULL REFERENCES postings (id),
    lot_id     bigint NOT NULL REFERENCES lots (id),
    points     bigint NOT NULL,
    held       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (posting_id, lot_id)
);
CREATE INDEX posting_lots_lot_idx ON posting_lots (lot_id);
CREATE TRIGGER posting_lots_append_only BEFORE UPDATE OR DELETE ON posting_lots
    FOR EACH ROW EXECUTE FUNCTION puntos_append_only();

CREATE TABLE holds (
    id          uuid PRIMARY KEY,
    member_id   uuid NOT NULL REFERENCES members (id),
    source      text NOT NULL,
    txn_id      text NOT NULL,
    posting_id  bigint NOT NULL REFERENCES postings (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    captured    bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'captured', 'released', 'expired')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    CONSTRAINT holds_source_txn_key UNIQUE (source, txn_id)
);
CREATE INDEX holds_open_idx ON holds (expires_at) WHERE status = 'open';

-- Every command that reached the ledger, keyed by the caller's transaction
-- id. A replay finds its row here and gets the first result back.
CREATE TABLE commands (
    source      text NOT NULL,
    txn_id      text NOT NULL,
    command_id  uuid NOT NULL,
    kind        text NOT NULL,
    hash        text NOT NULL,
    status      text NOT NULL,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT commands_pkey PRIMARY KEY (source, txn_id)
);

-- Ledger events written in the ledger transaction, relayed to the bus after
-- commit.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL,
    subject    text NOT NULL,
    body       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
