-- Watch sessions of dual-controlled tasks. A row is one live `writ watch`
-- stream: joining and leaving take a revision (so every server's decision
-- index notices within its refresh), a heartbeat only moves expires_at.
CREATE TABLE watches (
	id         text COLLATE "C" PRIMARY KEY,
	task       text COLLATE "C" NOT NULL,
	chain      text NOT NULL, -- JSON array of SPIFFE IDs, the watcher first
	expires_at bigint NOT NULL -- unix milliseconds
);
CREATE INDEX watches_task ON watches (task);
