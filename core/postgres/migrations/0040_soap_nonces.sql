-- The nonces of SOAP PasswordDigest tokens, kept until their Created time
-- is stale: a token captured on the wire is refused a second time by every
-- gateway and after a restart, not only by the process that saw it first
-- (the digest does not sign the body, so a replayed token could carry any
-- request within the freshness window).
CREATE TABLE IF NOT EXISTS soap_nonces (
    username  text NOT NULL,
    nonce     bytea NOT NULL,
    forget_at timestamptz NOT NULL,
    PRIMARY KEY (username, nonce)
);
CREATE INDEX IF NOT EXISTS soap_nonces_forget ON soap_nonces (forget_at);
