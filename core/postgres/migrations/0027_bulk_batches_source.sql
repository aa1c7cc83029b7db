-- The API key (source) that uploaded a batch over REST.
--
-- A batch above the approval threshold needs a second person. Over REST
-- the person is only the free-text X-Actor header, which the uploader's own
-- key can set to any name: an approval through the API must come from
-- another key than the upload's (the back office binds its approver to the
-- signed-in user instead). Batches from the back office and the inbox, and
-- those uploaded before this column, have none.

ALTER TABLE bulk_batches ADD COLUMN IF NOT EXISTS uploaded_source text NOT NULL DEFAULT '';
