-- The flat rates a program has had, each in force from its valid_from.
--
-- An accrual earns at the rate in force when the event happened, not when
-- it is processed: a bill reported late after the rate changed earns what
-- it earned on its day (DESIGN.md, "Time"). A program change that moves
-- the rate or its rounding adds a row in force from the moment the ledger
-- applies it; the first row of a program is in force since ever
-- (0001-01-01), so events dated before any change earn the first rate.
--
-- Programs made before this table get their present rate since ever: what
-- they had before was not kept.

CREATE TABLE IF NOT EXISTS program_rates (
    program_id       uuid NOT NULL REFERENCES programs (id),
    valid_from       timestamptz NOT NULL,
    points_per_unit  numeric(20, 6) NOT NULL,
    accrual_rounding text NOT NULL,
    PRIMARY KEY (program_id, valid_from)
);

INSERT INTO program_rates (program_id, valid_from, points_per_unit, accrual_rounding)
SELECT id, '0001-01-01 00:00:00+00', points_per_unit, accrual_rounding FROM programs
ON CONFLICT DO NOTHING;
