-- When a task stops granting for good: its deadline, or the time it was
-- closed or expired if earlier. The decision index keeps recently ended
-- tasks to name them in denials; this column (and its index) lets it read
-- only those instead of every task that ever ended.
ALTER TABLE tasks ADD COLUMN ends_at bigint NOT NULL DEFAULT 0;
-- Tasks stored before the column: an ended task was last written when it
-- ended (closed before its deadline, or expired after it: ended at the
-- deadline), so the earlier of the two is when it ended.
UPDATE tasks SET ends_at = CASE WHEN state IN ('closed', 'expired') THEN LEAST(updated_at, deadline) ELSE deadline END;
-- The decision index lists by state and end; the first index serves it,
-- the second a listing of every state.
CREATE INDEX tasks_state_ends_at ON tasks (state, ends_at);
CREATE INDEX tasks_ends_at ON tasks (ends_at);
