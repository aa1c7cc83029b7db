-- The audit entries an erasure rewrites, found without reading the log.
--
-- An erasure renames the entries about the member (by target) and the
-- reference other members' entries name (a transfer's recipient, a
-- merge's survivor). The audit log grows with every person's move made
-- over REST; without these indexes each erasure read all of it.
--
-- Building them locks the audit log against writes for as long as it
-- takes: a large log can have them created beforehand, outside a
-- transaction, with CREATE INDEX CONCURRENTLY under the same names.

CREATE INDEX IF NOT EXISTS bo_audit_target ON bo_audit (target);
CREATE INDEX IF NOT EXISTS bo_audit_request_to ON bo_audit ((after->'request'->>'to'))
    WHERE after->'request' ? 'to';
CREATE INDEX IF NOT EXISTS bo_audit_request_into ON bo_audit ((after->'request'->>'into'))
    WHERE after->'request' ? 'into';
CREATE INDEX IF NOT EXISTS bo_audit_dead_member ON bo_audit ((before->>'member'))
    WHERE action LIKE 'deadletter.%';
