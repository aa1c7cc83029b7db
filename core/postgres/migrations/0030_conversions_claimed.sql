-- Until when a worker delivers a conversion.
--
-- A person may settle a conversion the other program never answered for
-- sure; doing so while a worker is delivering it could give the points back
-- as the other program credits them. A claim now says until when it holds
-- (the worker's lease), and is cleared when the worker records the answer.

ALTER TABLE conversions ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
