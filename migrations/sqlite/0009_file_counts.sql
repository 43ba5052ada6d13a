-- Files and bytes per partner, channel and state, for /metrics: counting a
-- million rows at every scrape is too slow, and a counter row updated by
-- every arrival would make concurrent intakes (and a long feed holding its
-- verdict's row) wait on each other. So each change appends a delta row
-- (no contention), and a scrape folds the deltas into file_counts in one
-- transaction: what it deletes is exactly what it adds.
CREATE TABLE file_counts (
    partner TEXT    NOT NULL,
    channel TEXT    NOT NULL,
    verdict TEXT    NOT NULL,
    files   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    PRIMARY KEY (partner, channel, verdict)
);
CREATE TABLE file_count_deltas (
    id      INTEGER PRIMARY KEY,
    partner TEXT    NOT NULL,
    channel TEXT    NOT NULL,
    verdict TEXT    NOT NULL,
    files   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO file_counts (partner, channel, verdict, files, bytes)
    SELECT partner, channel, verdict, COUNT(*), COALESCE(SUM(size), 0) FROM files GROUP BY partner, channel, verdict;

CREATE TRIGGER files_count_arrival AFTER INSERT ON files
BEGIN
    INSERT INTO file_count_deltas (partner, channel, verdict, files, bytes)
        VALUES (NEW.partner, NEW.channel, NEW.verdict, 1, NEW.size);
END;
CREATE TRIGGER files_count_verdict AFTER UPDATE OF verdict ON files
WHEN NEW.verdict IS NOT OLD.verdict
BEGIN
    INSERT INTO file_count_deltas (partner, channel, verdict, files, bytes)
        VALUES (OLD.partner, OLD.channel, OLD.verdict, -1, -OLD.size),
               (NEW.partner, NEW.channel, NEW.verdict, 1, NEW.size);
END;
