-- The nonces of SOAP PasswordDigest tokens, kept until their Created time
-- is stale: a token captured on the wire is refused a second time by every
-- gateway and after a restart, not only by the process that saw it first
-- (the digest does not sign the body, so a replayed token could carry any
-- request within the freshness window). A nonce is claimed once whatever
-- the user name (the digest does not cover the name either: a token sent
-- again under another user's name is a replay too); the name is kept to
-- tell who used it.
CREATE TABLE IF NOT EXISTS soap_nonces (
    nonce     bytea PRIMARY KEY,
    username  text NOT NULL,
    forget_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS soap_nonces_forget ON soap_nonces (forget_at);
