-- The audit log: every change and issuance as one event, the leaves of an
-- RFC 6962 Merkle tree. The head counts events; its row lock orders every
-- appender of every server, and it is updated in the same transaction as
-- the rows, so indexes are gap-free and in commit order. Writers that also
-- bump the revision take the revision lock first, then this one.
CREATE TABLE audit_head (
	id   boolean PRIMARY KEY DEFAULT true CHECK (id),
	size bigint NOT NULL
);
INSERT INTO audit_head (size) VALUES (0);

-- event holds the exact bytes that were hashed; they are never rewritten.
CREATE TABLE audit_events (
	idx   bigint PRIMARY KEY,
	event bytea NOT NULL
);

-- The tree's stored hashes in tlog's numbering: with them a verifier
-- authenticates any subtree against a signed root and so names the exact
-- event that was changed.
CREATE TABLE audit_hashes (
	idx  bigint PRIMARY KEY,
	hash bytea NOT NULL
);

CREATE TABLE audit_checkpoints (
	server_id  text COLLATE "C" NOT NULL,
	size       bigint NOT NULL,
	note       bytea NOT NULL,
	created_at bigint NOT NULL,
	PRIMARY KEY (size, server_id)
);

CREATE TABLE audit_keys (
	name       text COLLATE "C" PRIMARY KEY,
	server_id  text COLLATE "C" NOT NULL,
	public_key bytea NOT NULL,
	created_at bigint NOT NULL
);

-- Incident flags on published authorities; sticky once set. Integers rather
-- than booleans keep the statements shared with SQLite.
ALTER TABLE ca_certs ADD COLUMN tainted bigint NOT NULL DEFAULT 0;
ALTER TABLE ca_certs ADD COLUMN revoked bigint NOT NULL DEFAULT 0;
ALTER TABLE jwt_keys ADD COLUMN tainted bigint NOT NULL DEFAULT 0;
ALTER TABLE jwt_keys ADD COLUMN revoked bigint NOT NULL DEFAULT 0;
