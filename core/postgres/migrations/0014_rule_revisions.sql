-- A revision number per program that moves with every change to its rules,
-- so that a process keeping compiled rules in memory learns with one indexed
-- read per transaction whether its copy is still current. The trigger moves
-- it for every writer of the rules table. Numbers come from a sequence, so a
-- change that rolls back leaves a number that nothing else will ever carry.
CREATE SEQUENCE rule_revision_seq;

CREATE TABLE rule_revisions (
    program_id uuid PRIMARY KEY REFERENCES programs (id),
    revision   bigint NOT NULL
);

CREATE FUNCTION puntos_rule_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM rule_revisions;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO rule_revisions (program_id, revision)
        VALUES (OLD.program_id, nextval('rule_revision_seq'))
        ON CONFLICT (program_id) DO UPDATE SET revision = EXCLUDED.revision;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO rule_revisions (program_id, revision)
        VALUES (NEW.program_id, nextval('rule_revision_seq'))
        ON CONFLICT (program_id) DO UPDATE SET revision = EXCLUDED.revision;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER rules_revision AFTER INSERT OR UPDATE OR DELETE ON rules
    FOR EACH ROW EXECUTE FUNCTION puntos_rule_revision();
CREATE TRIGGER rules_revision_truncate AFTER TRUNCATE ON rules
    FOR EACH STATEMENT EXECUTE FUNCTION puntos_rule_revision();

INSERT INTO rule_revisions (program_id, revision)
SELECT program_id, nextval('rule_revision_seq') FROM (SELECT DISTINCT program_id FROM rules) p;
