-- A rule's parents may be named by node selectors instead of (or besides)
-- an agent ID: every agent attested at join with all of them is a parent.
-- A JSON array of {"type", "value"} objects, sorted; '[]' for none.
ALTER TABLE entries ADD COLUMN parent_selectors TEXT NOT NULL DEFAULT '[]';
-- The feed lists these rules for every agent's snapshot; they are few
-- beside the rules named by parent ID, so a partial index finds them.
CREATE INDEX entries_by_parent_selectors ON entries (id) WHERE parent_selectors <> '[]';
