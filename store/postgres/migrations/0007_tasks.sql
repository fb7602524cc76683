-- Tasks and standing grants. The store keeps each as a JSON document the
-- server validates (package task); state and deadline are columns so
-- listing open tasks needs no parsing. Every change takes a revision, so
-- servers following the revision rebuild their decision index.
CREATE TABLE tasks (
	id         text COLLATE "C" PRIMARY KEY,
	state      text COLLATE "C" NOT NULL,
	deadline   bigint NOT NULL, -- unix seconds
	doc        text NOT NULL,
	revision   bigint NOT NULL,
	updated_at bigint NOT NULL
);
CREATE INDEX tasks_state ON tasks (state, id);

CREATE TABLE standing_grants (
	id         text COLLATE "C" PRIMARY KEY,
	doc        text NOT NULL,
	revision   bigint NOT NULL,
	updated_at bigint NOT NULL
);
