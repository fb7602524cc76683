-- Text that is compared or ordered uses the "C" collation: byte order, the
-- same as Go's and SQLite's, whatever locale the database was created with.

-- The store-wide revision: one row, bumped by every change to entries. The
-- row lock of that UPDATE orders all writers of all servers.
CREATE TABLE revision (
	id    boolean PRIMARY KEY DEFAULT true CHECK (id),
	value bigint NOT NULL
);
INSERT INTO revision (value) VALUES (0);

CREATE TABLE entries (
	id               text COLLATE "C" PRIMARY KEY,
	spiffe_id        text COLLATE "C" NOT NULL,
	parent_id        text COLLATE "C" NOT NULL,
	x509_ttl_seconds bigint NOT NULL,
	jwt_ttl_seconds  bigint NOT NULL,
	hint             text COLLATE "C" NOT NULL,
	expires_at       bigint NOT NULL, -- unix seconds, 0 = never
	revision         bigint NOT NULL,
	created_at       bigint NOT NULL,
	updated_at       bigint NOT NULL,
	dns_names        text NOT NULL,   -- JSON array
	-- hex SHA-256 of SPIFFE ID, parent ID and the sorted selector set: two
	-- rules that match the same workloads the same way cannot coexist.
	fingerprint      text COLLATE "C" NOT NULL UNIQUE
);
-- id in the index keeps a filtered page in id order without sorting.
CREATE INDEX entries_spiffe_id ON entries (spiffe_id, id);
CREATE INDEX entries_parent_id ON entries (parent_id, id);

CREATE TABLE entry_selectors (
	entry_id text COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
	type     text COLLATE "C" NOT NULL,
	value    text COLLATE "C" NOT NULL,
	PRIMARY KEY (entry_id, type, value)
);
-- entry_id makes finding the entries holding a selector an index-only scan.
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value, entry_id);

-- No foreign key: the history outlives the entries it names.
CREATE TABLE entry_changes (
	revision bigint NOT NULL,
	entry_id text COLLATE "C" NOT NULL,
	op       text NOT NULL CHECK (op IN ('put', 'delete')),
	PRIMARY KEY (revision, entry_id)
);

CREATE TABLE ca_certs (
	sha256     text COLLATE "C" PRIMARY KEY, -- hex SHA-256 of cert_der
	server_id  text NOT NULL,
	cert_der   bytea NOT NULL,
	not_before bigint NOT NULL,
	not_after  bigint NOT NULL
);
CREATE INDEX ca_certs_not_after ON ca_certs (not_after);
