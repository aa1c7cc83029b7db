-- A batch is one file read one way: the same bytes declared in another
-- charset or date pattern are another batch.
--
-- Why: a file sent without its charset gets, on its lines that are not
-- UTF-8, the hint to declare it (charset=latin-1). Sent again with the
-- declaration, the same bytes matched the first batch by checksum alone and
-- the answer was that batch, still read as UTF-8: the hint could not be
-- followed. The same happened with date_format.
--
-- A line is still applied once: its transaction id (source file:<program>)
-- is unique across files, so a line of the second batch that the first one
-- posted is a replay, and one that now reads otherwise is a conflict.

ALTER TABLE bulk_batches DROP CONSTRAINT bulk_batches_checksum_key;
ALTER TABLE bulk_batches ADD CONSTRAINT bulk_batches_checksum_key
    UNIQUE (program, checksum, charset, date_format);
