-- Tokens from identity providers (OIDC, Kubernetes) are accepted once: the
-- issuer and token id are kept until the token expires.
CREATE TABLE join_replay (
	issuer     TEXT NOT NULL,
	jti        TEXT NOT NULL,
	expires_at INTEGER NOT NULL, -- unix seconds
	PRIMARY KEY (issuer, jti)
) STRICT;
CREATE INDEX join_replay_expires_at ON join_replay (expires_at);
