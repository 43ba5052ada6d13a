-- Files and bytes per partner, channel and state, for /metrics: counting a
-- million rows at every scrape is too slow, and a counter row updated by
-- every arrival would make concurrent intakes (and a long feed holding its
-- verdict's row) wait on each other. So each change appends a delta row
-- (no contention), and a scrape folds the deltas into file_counts in one
-- statement: what it deletes is exactly what it adds, whichever gateway
-- processes scrape at once.
CREATE TABLE file_counts (
    partner TEXT   NOT NULL,
    channel TEXT   NOT NULL,
    verdict TEXT   NOT NULL,
    files   BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    PRIMARY KEY (partner, channel, verdict)
);
CREATE TABLE file_count_deltas (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner TEXT   NOT NULL,
    channel TEXT   NOT NULL,
    verdict TEXT   NOT NULL,
    files   BIGINT NOT NULL,
    bytes   BIGINT NOT NULL
);
INSERT INTO file_counts (partner, channel, verdict, files, bytes)
    SELECT partner, channel, verdict, COUNT(*), COALESCE(SUM(size), 0) FROM files GROUP BY partner, channel, verdict;

CREATE FUNCTION settlegate_count_files() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.verdict IS NOT DISTINCT FROM OLD.verdict THEN
            RETURN NULL;
        END IF;
        INSERT INTO file_count_deltas (partner, channel, verdict, files, bytes)
            VALUES (OLD.partner, OLD.channel, OLD.verdict, -1, -OLD.size);
    END IF;
    INSERT INTO file_count_deltas (partner, channel, verdict, files, bytes)
        VALUES (NEW.partner, NEW.channel, NEW.verdict, 1, NEW.size);
    RETURN NULL;
END $$;
CREATE TRIGGER files_count AFTER INSERT OR UPDATE OF verdict ON files
    FOR EACH ROW EXECUTE FUNCTION settlegate_count_files();
