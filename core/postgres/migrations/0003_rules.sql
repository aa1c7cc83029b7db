-- The rules engine: conversion rules by version, their cap counters, member
-- attributes that conditions read, and tiers with each member's history.

-- Attributes a rule condition may read (plan, contract, payment method,
-- segment tags), and the member's current tier level ('' for none).
ALTER TABLE members ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE members ADD COLUMN tier text NOT NULL DEFAULT '';

-- One row per version of a rule. A version is in force from valid_from
-- (NULL: always) until the earliest of its body's valid_to and `until`, which
-- a newer version or a retirement sets. Versions are never changed otherwise.
CREATE TABLE rules (
    program_id  uuid NOT NULL REFERENCES programs (id),
    code        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    event_type  text NOT NULL,
    body        jsonb NOT NULL,
    valid_from  timestamptz,
    valid_to    timestamptz,
    until       timestamptz,
    retired     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    source      text NOT NULL,
    txn_id      text NOT NULL,
    CONSTRAINT rules_pkey PRIMARY KEY (program_id, code, version)
);
CREATE INDEX rules_event_idx ON rules (program_id, event_type);

-- What each capped rule has given per member (scope: the member id) and
-- local day ('d:2026-03-10') or month ('m:2026-03'), and to the whole program
-- (scope '', window 'budget'). Updated in the ledger transaction of the
-- accrual; keyed by rule code, so a new version keeps counting.
CREATE TABLE rule_counters (
    program_id  uuid NOT NULL REFERENCES programs (id),
    rule_code   text NOT NULL,
    scope       text NOT NULL,
    win         text NOT NULL,
    points      bigint NOT NULL CHECK (points >= 0),
    CONSTRAINT rule_counters_pkey PRIMARY KEY (program_id, rule_code, scope, win)
);

-- A program's tier levels: qualification by accrued points in a rolling
-- window, and a points multiplier per level.
CREATE TABLE program_tiers (
    program_id  uuid PRIMARY KEY REFERENCES programs (id),
    body        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Every change of a member's tier level.
CREATE TABLE member_tiers (
    id            bigserial PRIMARY KEY,
    member_id     uuid NOT NULL REFERENCES members (id),
    from_tier     text NOT NULL,
    to_tier       text NOT NULL,
    qualification bigint NOT NULL,
    changed_at    timestamptz NOT NULL,
    reason        text NOT NULL
);
CREATE INDEX member_tiers_member_idx ON member_tiers (member_id, id);
-- Qualification sums a member's accruals by occurrence time.
CREATE INDEX postings_accrual_idx ON postings (member_id, occurred_at) WHERE kind = 'accrual';
