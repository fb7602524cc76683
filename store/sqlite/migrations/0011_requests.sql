-- Access requests, their reviews and the review rules. A request is the
-- server's JSON document of it (package task/review) with the columns it
-- is listed by; reviews are rows of their own, in the order made, so a
-- request's history is never rewritten. A review is added in the same
-- transaction as the request's compare-and-set, so two reviewers racing
-- each see the other's review before deciding. The rules are the one file
-- an operator applied, kept as text so every server parses the same file.
CREATE TABLE requests (
	id            TEXT PRIMARY KEY,
	state         TEXT NOT NULL,
	task          TEXT NOT NULL,
	pending_until INTEGER NOT NULL, -- unix seconds
	doc           TEXT NOT NULL,
	revision      INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX requests_state ON requests (state, id);

CREATE TABLE request_reviews (
	request_id TEXT NOT NULL REFERENCES requests (id),
	seq        INTEGER NOT NULL,
	doc        TEXT NOT NULL,
	revision   INTEGER NOT NULL,
	PRIMARY KEY (request_id, seq)
) STRICT;

CREATE TABLE review_rules (
	id         INTEGER PRIMARY KEY CHECK (id = 1),
	text       TEXT NOT NULL,
	revision   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
