-- One-time join tokens. Only a digest of the secret part is kept: the store
-- cannot leak a usable token.
CREATE TABLE join_tokens (
	id            text COLLATE "C" PRIMARY KEY,
	secret_sha256 bytea NOT NULL,
	created_by    text NOT NULL,
	created_at    bigint NOT NULL, -- unix seconds
	expires_at    bigint NOT NULL, -- unix seconds
	used_at       bigint NOT NULL DEFAULT 0,
	used_by       text NOT NULL DEFAULT ''
);

-- Agents that joined. serial is the certificate the agent uses now;
-- pending_serial the one its last renewal issued and it has not used yet.
-- Any other certificate of the agent presented means a copy exists.
CREATE TABLE agents (
	id             text COLLATE "C" PRIMARY KEY,
	spiffe_id      text COLLATE "C" NOT NULL UNIQUE,
	join_method    text NOT NULL,
	selectors      text NOT NULL, -- JSON array of "type:value"
	serial         text NOT NULL,
	pending_serial text NOT NULL,
	generation     bigint NOT NULL,
	cert_not_after bigint NOT NULL,
	created_at     bigint NOT NULL,
	last_seen      bigint NOT NULL
);
