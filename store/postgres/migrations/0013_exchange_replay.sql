-- Subject tokens of token exchanges are exchanged once, whichever server
-- is asked: the issuer and the token's id (its jti, or a digest of what it
-- signs) are kept until the token expires. Apart from join_replay so that
-- signing in with an ID token does not spend it for an exchange.
CREATE TABLE exchange_replay (
	issuer     text COLLATE "C" NOT NULL,
	jti        text COLLATE "C" NOT NULL,
	expires_at bigint NOT NULL, -- unix seconds
	PRIMARY KEY (issuer, jti)
);
CREATE INDEX exchange_replay_expires_at ON exchange_replay (expires_at);
