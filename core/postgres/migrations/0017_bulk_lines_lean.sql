-- Cheaper validation of bulk files: one check per COPY instead of per line.
--
-- Why: validation stores every line of a file in bulk_lines, 5,000 lines per
-- COPY. Measured on 100,000 lines, the COPY took 1.7 s with the table as 0004
-- made it and 0.4 s without its foreign key and its (batch_id, txn_id)
-- index: the foreign key checks (and share-locks) the batch row once per line,
-- about 9 µs each, and the index adds about 4 µs per line (docs/benchmarks.md).
--
-- What replaces them:
--   * the foreign key: a statement trigger checks, once per COPY or INSERT,
--     that every batch the new lines name exists, and deleting a batch still
--     deletes its lines (nothing in Puntos deletes a batch today);
--   * the index: only the search for repeated transaction ids in a batch
--     (Ledger.FinishValidation) reads lines by txn_id, and it reads all of the
--     batch's lines at once, which a hash join does without the index.

ALTER TABLE bulk_lines DROP CONSTRAINT IF EXISTS bulk_lines_batch_id_fkey;
DROP INDEX IF EXISTS bulk_lines_txn_idx;

-- puntos_bulk_lines_batch refuses new lines of a batch that does not exist.
CREATE FUNCTION puntos_bulk_lines_batch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    SELECT n.batch_id INTO missing
        FROM (SELECT DISTINCT batch_id FROM new_lines) n
        WHERE NOT EXISTS (SELECT 1 FROM bulk_batches b WHERE b.id = n.batch_id)
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bulk_lines name batch %, which bulk_batches does not hold', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER bulk_lines_batch AFTER INSERT ON bulk_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION puntos_bulk_lines_batch();

-- puntos_bulk_batch_lines deletes the lines of a deleted batch, as the
-- foreign key's ON DELETE CASCADE did, and refuses to change a batch's id.
CREATE FUNCTION puntos_bulk_batch_lines() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM bulk_lines WHERE batch_id = OLD.id;
        RETURN OLD;
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'the id of a batch never changes: its lines refer to it'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER bulk_batches_lines AFTER DELETE OR UPDATE OF id ON bulk_batches
    FOR EACH ROW EXECUTE FUNCTION puntos_bulk_batch_lines();
