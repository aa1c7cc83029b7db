-- A member's open holds, by expiry.
--
-- A balance read counts the points of a member's holds past their time as
-- free again before the sweep releases them, and the only index of open
-- holds is by expiry across all members: with many holds overdue at once
-- every read of a member holding points scanned them all. This one answers
-- from the member's own open holds.
--
-- Building it locks holds against writes for as long as it takes: a
-- database with many holds can create it beforehand, outside a
-- transaction, with CREATE INDEX CONCURRENTLY under the same name.

CREATE INDEX IF NOT EXISTS holds_member_open_idx ON holds (member_id, expires_at)
    WHERE status = 'open';
