-- Expiry notices: which lots members were warned about, at which threshold
-- (days before expiry). The primary key makes a warning go out once per lot
-- and threshold, however many sweeps race or restart.
CREATE TABLE notice_sent (
    lot_id         bigint NOT NULL REFERENCES lots (id),
    threshold_days integer NOT NULL CHECK (threshold_days > 0),
    sent_at        timestamptz NOT NULL,
    PRIMARY KEY (lot_id, threshold_days)
);
