-- Access requests, their reviews and the review rules. A request is the
-- server's JSON document of it (package task/review) with the columns it
-- is listed by; reviews are rows of their own, in the order made, so a
-- request's history is never rewritten. A review is added in the same
-- transaction as the request's compare-and-set, so two reviewers racing
-- each see the other's review before deciding. The rules are the one file
-- an operator applied, kept as text so every server parses the same file.
CREATE TABLE requests (
	id            text COLLATE "C" PRIMARY KEY,
	state         text COLLATE "C" NOT NULL,
	task          text COLLATE "C" NOT NULL,
	pending_until bigint NOT NULL, -- unix seconds
	doc           text NOT NULL,
	revision      bigint NOT NULL,
	updated_at    bigint NOT NULL
);
CREATE INDEX requests_state ON requests (state, id);

CREATE TABLE request_reviews (
	request_id text COLLATE "C" NOT NULL REFERENCES requests (id),
	seq        bigint NOT NULL,
	doc        text NOT NULL,
	revision   bigint NOT NULL,
	PRIMARY KEY (request_id, seq)
);

CREATE TABLE review_rules (
	id         integer PRIMARY KEY CHECK (id = 1),
	text       text NOT NULL,
	revision   bigint NOT NULL,
	updated_at bigint NOT NULL
);
