-- PostgreSQL's migration of this number checks that entries name files once
-- a statement instead of once a row. SQLite checks its foreign keys in
-- process, cheaply: its entries keep theirs, and nothing changes here.
SELECT 1;
