-- A rule's versions end where a later version starts or ends.
--
-- A new version, or a retirement, used to end only the rule's latest
-- version. When that latest version was scheduled for later, the one before
-- it stayed in force until then: retiring the rule left it earning, and a
-- version of another event type made meanwhile ran beside it. Versions now
-- end where any later version starts, or ends (a retirement), and the
-- versions stored before this change are brought to the same shape. The
-- rules' revision moves with them (trigger of 0014), so every process
-- reads them again.
UPDATE rules r SET until = b.bound
FROM (SELECT r1.program_id, r1.code, r1.version,
        (SELECT min(least(r2.valid_from, r2.until)) FROM rules r2
         WHERE r2.program_id = r1.program_id AND r2.code = r1.code
           AND r2.version > r1.version) AS bound
      FROM rules r1) b
WHERE r.program_id = b.program_id AND r.code = b.code AND r.version = b.version
  AND b.bound IS NOT NULL AND (r.until IS NULL OR r.until > b.bound);
