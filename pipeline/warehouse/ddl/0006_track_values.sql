-- Two columns the worker writes on each track, for experiment results (pipeline/results):
-- * value: the number the worker counted for the track — its `value` property if numeric, else the
--   configured value property (SLUICE_VALUE_PROPERTY, default order_total), else 0; the same number
--   the units' tallies and the track rollups sum. NULL on rows written before the worker wrote
--   it (and in inserts that leave it out): readers apply the same rule to their properties, with
--   the value property they are configured with (pipeline/results/sql.py).
-- * post_exposure: the experiments (first 16) whose first exposure of the unit the track came at or
--   after, as the worker knew it when it processed the track. A first exposure only moves earlier,
--   so such a track is never in its unit's pre-exposure window in those experiments: the CUPED
--   covariate's scan skips it without reading more (it is a filter, never the definition).
ALTER TABLE events ADD COLUMN IF NOT EXISTS value Nullable(Float64) DEFAULT NULL COMMENT 'the track''s value as the worker counted it; NULL on rows written before it did' AFTER properties;
ALTER TABLE events ADD COLUMN IF NOT EXISTS post_exposure Array(LowCardinality(String)) DEFAULT [] COMMENT 'experiments whose first exposure of the unit the track came after (first 16)' AFTER variant_id;

-- the view was made with the columns of its time
DROP VIEW IF EXISTS events_final;
CREATE VIEW IF NOT EXISTS events_final AS SELECT * FROM events FINAL;

