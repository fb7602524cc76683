-- The store-wide revision: one row, bumped by every change to entries.
CREATE TABLE revision (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	value INTEGER NOT NULL
) STRICT;
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE entries (
	id               TEXT PRIMARY KEY,
	spiffe_id        TEXT NOT NULL,
	parent_id        TEXT NOT NULL,
	x509_ttl_seconds INTEGER NOT NULL,
	jwt_ttl_seconds  INTEGER NOT NULL,
	hint             TEXT NOT NULL,
	expires_at       INTEGER NOT NULL, -- unix seconds, 0 = never
	revision         INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	updated_at       INTEGER NOT NULL,
	dns_names        TEXT NOT NULL,    -- JSON array
	-- hex SHA-256 of SPIFFE ID, parent ID and the sorted selector set: two
	-- rules that match the same workloads the same way cannot coexist.
	fingerprint      TEXT NOT NULL UNIQUE
) STRICT;
-- id in the index keeps a filtered page in id order without sorting.
CREATE INDEX entries_spiffe_id ON entries (spiffe_id, id);
CREATE INDEX entries_parent_id ON entries (parent_id, id);

CREATE TABLE entry_selectors (
	entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
	type     TEXT NOT NULL,
	value    TEXT NOT NULL,
	PRIMARY KEY (entry_id, type, value)
) STRICT, WITHOUT ROWID;
-- In a WITHOUT ROWID table the index also carries entry_id, so finding the
-- entries holding a selector never touches the table.
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

-- No foreign key: the history outlives the entries it names.
CREATE TABLE entry_changes (
	revision INTEGER NOT NULL,
	entry_id TEXT NOT NULL,
	op       TEXT NOT NULL CHECK (op IN ('put', 'delete')),
	PRIMARY KEY (revision, entry_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE ca_certs (
	sha256     TEXT PRIMARY KEY, -- hex SHA-256 of cert_der
	server_id  TEXT NOT NULL,
	cert_der   BLOB NOT NULL,
	not_before INTEGER NOT NULL,
	not_after  INTEGER NOT NULL
) STRICT;
CREATE INDEX ca_certs_not_after ON ca_certs (not_after);
