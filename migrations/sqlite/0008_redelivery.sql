-- A redelivery (channel 'redelivery') names the stored file whose bytes it
-- takes through the pipeline again.
ALTER TABLE files ADD COLUMN redelivery_of INTEGER REFERENCES files (id);
CREATE INDEX files_redelivery_of ON files (redelivery_of) WHERE redelivery_of IS NOT NULL;
