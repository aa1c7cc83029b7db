-- A retired rule's versions all end when it was retired.
--
-- A retirement used to end only the rule's latest version. When that latest
-- version was scheduled for later, the one before it stayed in force until
-- then: retiring the rule left it earning. A retirement now ends every
-- version still in force, and the rules retired before this change are
-- brought to the same shape. The rules' revision moves with them (trigger
-- of 0014), so every process reads them again.
UPDATE rules r SET until = x.until
FROM (SELECT DISTINCT ON (program_id, code) program_id, code, retired, until
      FROM rules ORDER BY program_id, code, version DESC) x
WHERE r.program_id = x.program_id AND r.code = x.code AND x.retired
  AND x.until IS NOT NULL AND (r.until IS NULL OR r.until > x.until);
