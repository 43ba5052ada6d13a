-- PostgreSQL's migration of this number has the check that entries name
-- files planned at each statement; SQLite checks them by its deferred
-- foreign keys (0018): nothing changes here.
SELECT 1;
