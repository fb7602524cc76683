-- The audit log: every change and issuance as one event, the leaves of an
-- RFC 6962 Merkle tree. The head counts events; it is updated in the same
-- transaction as the rows, so indexes are gap-free and in commit order.
CREATE TABLE audit_head (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	size INTEGER NOT NULL
) STRICT;
INSERT INTO audit_head (id, size) VALUES (1, 0);

-- event holds the exact bytes that were hashed; they are never rewritten.
CREATE TABLE audit_events (
	idx   INTEGER PRIMARY KEY,
	event BLOB NOT NULL
) STRICT;

-- The tree's stored hashes in tlog's numbering: with them a verifier
-- authenticates any subtree against a signed root and so names the exact
-- event that was changed.
CREATE TABLE audit_hashes (
	idx  INTEGER PRIMARY KEY,
	hash BLOB NOT NULL
) STRICT;

CREATE TABLE audit_checkpoints (
	server_id  TEXT NOT NULL,
	size       INTEGER NOT NULL,
	note       BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (size, server_id)
) STRICT;

CREATE TABLE audit_keys (
	name       TEXT PRIMARY KEY,
	server_id  TEXT NOT NULL,
	public_key BLOB NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;

-- Incident flags on published authorities; sticky once set.
ALTER TABLE ca_certs ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ca_certs ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jwt_keys ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jwt_keys ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
