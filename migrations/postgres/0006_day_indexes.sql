-- The settlement day and monitoring read the ledger every few seconds:
-- each of their questions is answered from an index, not a table scan.

-- Quarantine per partner: the few files waiting for an operator.
CREATE INDEX files_quarantine ON files (partner)
    WHERE verdict IN ('drill', 'conflict', 'overlap', 'invalid');
-- The report: quarantined files whose business date could not be read,
-- by when they arrived.
CREATE INDEX files_undated ON files (received_at) WHERE business_date IS NULL;
