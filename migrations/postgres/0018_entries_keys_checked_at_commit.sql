-- SQLite's migration of this number checks the foreign keys of entries at
-- commit, so its bulk insert keeps no statement journal. PostgreSQL's COPY
-- keeps none either, and its entries are checked once a statement since
-- 0016: nothing changes here.
SELECT 1;
