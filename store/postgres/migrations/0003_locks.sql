-- Locks stop issuance for a target. Every change to them takes a revision,
-- like entries, so servers and agents following the revision notice them.
CREATE TABLE locks (
	id           text COLLATE "C" PRIMARY KEY,
	target_kind  text COLLATE "C" NOT NULL,
	target_value text COLLATE "C" NOT NULL,
	reason       text NOT NULL,
	created_by   text NOT NULL,
	created_at   bigint NOT NULL, -- unix seconds
	expires_at   bigint NOT NULL  -- unix seconds, 0 = until deleted
);
