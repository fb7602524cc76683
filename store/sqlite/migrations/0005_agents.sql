-- One-time join tokens. Only a digest of the secret part is kept: the store
-- cannot leak a usable token.
CREATE TABLE join_tokens (
	id            TEXT PRIMARY KEY,
	secret_sha256 BLOB NOT NULL,
	created_by    TEXT NOT NULL,
	created_at    INTEGER NOT NULL, -- unix seconds
	expires_at    INTEGER NOT NULL, -- unix seconds
	used_at       INTEGER NOT NULL DEFAULT 0,
	used_by       TEXT NOT NULL DEFAULT ''
) STRICT;

-- Agents that joined. serial is the certificate the agent uses now;
-- pending_serial the one its last renewal issued and it has not used yet.
-- Any other certificate of the agent presented means a copy exists.
CREATE TABLE agents (
	id             TEXT PRIMARY KEY,
	spiffe_id      TEXT NOT NULL UNIQUE,
	join_method    TEXT NOT NULL,
	selectors      TEXT NOT NULL, -- JSON array of "type:value"
	serial         TEXT NOT NULL,
	pending_serial TEXT NOT NULL,
	generation     INTEGER NOT NULL,
	cert_not_after INTEGER NOT NULL,
	created_at     INTEGER NOT NULL,
	last_seen      INTEGER NOT NULL
) STRICT;
