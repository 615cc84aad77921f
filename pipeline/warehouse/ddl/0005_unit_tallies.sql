-- Per-unit tallies for experiment results (pipeline/results): per attributed event name, how many
-- tracks the unit made at or after its first exposure, and the sum of their values. The worker
-- keeps them in the unit's state (pipeline/rules.py ``tally``, exact under replays) and writes them
-- with the unit's row, so a result is one scan of experiment_units FINAL and nothing per event.
ALTER TABLE experiment_units ADD COLUMN IF NOT EXISTS event_counts Map(String, UInt32) COMMENT 'per event: attributed tracks at or after the first exposure' AFTER variants_seen;
ALTER TABLE experiment_units ADD COLUMN IF NOT EXISTS event_values Map(String, Float64) COMMENT 'per event: the sum of those tracks values' AFTER event_counts;

-- the view was made with the columns of its time
DROP VIEW IF EXISTS experiment_units_final;
CREATE VIEW IF NOT EXISTS experiment_units_final AS SELECT * FROM experiment_units FINAL;
