-- Bulk posting records every line's outcome in the transaction that posts
-- it. Room left on each page of bulk_lines lets those updates stay on the
-- same page (HOT), without a new entry in either index per line.
ALTER TABLE bulk_lines SET (fillfactor = 60);
