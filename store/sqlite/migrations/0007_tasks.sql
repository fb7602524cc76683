-- Tasks and standing grants. The store keeps each as a JSON document the
-- server validates (package task); state and deadline are columns so
-- listing open tasks needs no parsing. Every change takes a revision, so
-- servers following the revision rebuild their decision index.
CREATE TABLE tasks (
	id         TEXT PRIMARY KEY,
	state      TEXT NOT NULL,
	deadline   INTEGER NOT NULL, -- unix seconds
	doc        TEXT NOT NULL,
	revision   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX tasks_state ON tasks (state, id);

CREATE TABLE standing_grants (
	id         TEXT PRIMARY KEY,
	doc        TEXT NOT NULL,
	revision   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
