-- A file quarantined as a drill only for how it arrived (a DR endpoint, a
-- drill channel or window, a file-name pattern) says nothing about another
-- arrival of the same bytes by a production route: such a copy is judged on
-- its own instead of as a duplicate of the drill copy. Rows written before
-- this column existed keep FALSE (judged as they were: a duplicate).
ALTER TABLE files ADD COLUMN drill_by_arrival INTEGER NOT NULL DEFAULT 0
    CHECK (drill_by_arrival IN (0, 1));
