-- Locks stop issuance for a target. Every change to them takes a revision,
-- like entries, so servers and agents following the revision notice them.
CREATE TABLE locks (
	id           TEXT PRIMARY KEY,
	target_kind  TEXT NOT NULL,
	target_value TEXT NOT NULL,
	reason       TEXT NOT NULL,
	created_by   TEXT NOT NULL,
	created_at   INTEGER NOT NULL, -- unix seconds
	expires_at   INTEGER NOT NULL  -- unix seconds, 0 = until deleted
) STRICT;
