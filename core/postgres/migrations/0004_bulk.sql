-- Bulk point loads from files. A batch is one stored file (unique by its
-- checksum within a program); its lines are kept here after validation so
-- that posting can resume where it stopped and the result file can be
-- produced without holding the file in memory.

CREATE TABLE bulk_batches (
    id             uuid PRIMARY KEY,
    program        text NOT NULL,
    checksum       text NOT NULL,
    file_name      text NOT NULL,
    stored_path    text NOT NULL,
    size_bytes     bigint NOT NULL,
    charset        text NOT NULL,
    date_format    text NOT NULL DEFAULT '',
    uploaded_by    text NOT NULL,
    channel        text NOT NULL,
    status         text NOT NULL DEFAULT 'received' CHECK (status IN
                   ('received', 'validating', 'validated', 'failed', 'posting', 'posted')),
    error          text NOT NULL DEFAULT '',
    lines          bigint NOT NULL DEFAULT 0,
    valid_lines    bigint NOT NULL DEFAULT 0,
    invalid_lines  bigint NOT NULL DEFAULT 0,
    credit_points  bigint NOT NULL DEFAULT 0,
    debit_points   bigint NOT NULL DEFAULT 0,
    needs_approval boolean NOT NULL DEFAULT false,
    approved_by    text NOT NULL DEFAULT '',
    approved_at    timestamptz,
    posted_by      text NOT NULL DEFAULT '',
    -- Posting progress: the last line whose outcome is recorded, and counts.
    posted_through bigint NOT NULL DEFAULT 0,
    posted_lines   bigint NOT NULL DEFAULT 0,
    rejected_lines bigint NOT NULL DEFAULT 0,
    -- Where the current run of the posting step started, for its rate.
    run_started_at timestamptz,
    run_start_done bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    validated_at   timestamptz,
    started_at     timestamptz,
    finished_at    timestamptz,
    CONSTRAINT bulk_batches_checksum_key UNIQUE (program, checksum)
);

CREATE TABLE bulk_lines (
    batch_id     uuid NOT NULL REFERENCES bulk_batches (id) ON DELETE CASCADE,
    -- The line number in the file where the record starts (the header is 1).
    line         bigint NOT NULL,
    member       text NOT NULL DEFAULT '',
    points       bigint NOT NULL DEFAULT 0,
    reason       text NOT NULL DEFAULT '',
    effective_at timestamptz,
    expires_at   timestamptz,
    txn_id       text NOT NULL DEFAULT '',
    status       text NOT NULL CHECK (status IN ('valid', 'invalid', 'posted', 'rejected')),
    error_kind   text NOT NULL DEFAULT '',
    error_field  text NOT NULL DEFAULT '',
    error        text NOT NULL DEFAULT '',
    replayed     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (batch_id, line)
);
CREATE INDEX bulk_lines_txn_idx ON bulk_lines (batch_id, txn_id);
