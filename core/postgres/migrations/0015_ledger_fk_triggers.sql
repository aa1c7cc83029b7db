-- Foreign keys off the rows written for every posting, guarded instead by
-- rows that are never deleted or re-keyed, and audited by Ledger.Check.
--
-- Why: postings, lots, posting_lots and accrual_amounts take a row per
-- accrual, expiry or bulk line. Each foreign key on them costs a lookup and a
-- row lock on the referenced row per inserted row: a quarter to a half of
-- the PostgreSQL time of a set-based batch, a bulk file or an expiry sweep.
-- These rows are written only by core, with ids it has just read or made in
-- the same transaction. Past that, a reference breaks only when a member,
-- program, posting or lot is deleted or changes its id, and nothing in Puntos
-- does either: erasure anonymises the member row in place, programs are
-- upserted by code, postings and posting_lots are append-only (0001).
--
-- What replaces them:
--   * the triggers below refuse DELETE of members, programs and lots, and any
--     change of their ids, so a referenced row cannot go away (postings and
--     posting_lots already refuse both through puntos_append_only);
--   * Ledger.Check reports every posting, lot, accrual amount and lot move
--     whose member, program, posting or lot is missing, every posting whose
--     member belongs to another program, and every lot whose member is not
--     its posting's member; the test suites and the load generator run it.
--     It also catches, after the fact, a writer that puts a wrong id in a
--     new row, which a foreign key would have refused at once.
--
-- TRUNCATE fires no row trigger. A plain TRUNCATE of members, programs,
-- postings or lots is still refused by the foreign keys that stay (holds,
-- members.program_id, notice_sent and others); only TRUNCATE ... CASCADE by
-- the tables' owner gets through, as it already could for the append-only
-- postings. No statement trigger is added for it: test set-ups empty their
-- own databases that way.
--
-- The foreign keys of less busy tables (holds, member_tiers, conversions,
-- reward_orders, notice_sent, postings.reverses_id, ...) stay.
-- Dropping a constraint only takes a short exclusive lock; nothing is scanned.

ALTER TABLE postings DROP CONSTRAINT IF EXISTS postings_member_id_fkey;
ALTER TABLE postings DROP CONSTRAINT IF EXISTS postings_program_id_fkey;
ALTER TABLE lots DROP CONSTRAINT IF EXISTS lots_member_id_fkey;
ALTER TABLE lots DROP CONSTRAINT IF EXISTS lots_posting_id_fkey;
ALTER TABLE accrual_amounts DROP CONSTRAINT IF EXISTS accrual_amounts_posting_id_fkey;
ALTER TABLE posting_lots DROP CONSTRAINT IF EXISTS posting_lots_posting_id_fkey;
ALTER TABLE posting_lots DROP CONSTRAINT IF EXISTS posting_lots_lot_id_fkey;

-- puntos_keep_row refuses to delete a row that ledger rows refer to, or to
-- change its id. The trigger's argument is a hint saying what to do instead.
CREATE FUNCTION puntos_keep_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.id IS NOT DISTINCT FROM OLD.id THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'the id of a row in % never changes: ledger rows refer to it',
            TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation', HINT = TG_ARGV[0];
    END IF;
    RAISE EXCEPTION '% rows are never deleted: ledger rows refer to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation', HINT = TG_ARGV[0];
END $$;

CREATE TRIGGER members_keep BEFORE DELETE OR UPDATE OF id ON members
    FOR EACH ROW EXECUTE FUNCTION puntos_keep_row(
        'Close the member, or erase its personal data, instead.');
CREATE TRIGGER programs_keep BEFORE DELETE OR UPDATE OF id ON programs
    FOR EACH ROW EXECUTE FUNCTION puntos_keep_row(
        'A program stays for as long as its ledger does.');
CREATE TRIGGER lots_keep BEFORE DELETE OR UPDATE OF id ON lots
    FOR EACH ROW EXECUTE FUNCTION puntos_keep_row(
        'An emptied lot stays with remaining 0.');
