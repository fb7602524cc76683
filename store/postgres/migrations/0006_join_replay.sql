-- Tokens from identity providers (OIDC, Kubernetes) are accepted once: the
-- issuer and token id are kept until the token expires.
CREATE TABLE join_replay (
	issuer     text COLLATE "C" NOT NULL,
	jti        text COLLATE "C" NOT NULL,
	expires_at bigint NOT NULL, -- unix seconds
	PRIMARY KEY (issuer, jti)
);
CREATE INDEX join_replay_expires_at ON join_replay (expires_at);
