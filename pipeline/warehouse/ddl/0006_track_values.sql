-- Two columns the worker writes on each track, for experiment results (pipeline/results):
-- * value: the number the worker counted for the track — its `value` property if numeric, else the
--   configured value property (SLUICE_VALUE_PROPERTY, default order_total), else 0; the same number
--   the units' tallies and the track rollups sum. Rows written before this column existed read it
--   from their properties with the default value property.
-- * post_exposure: the experiments (first 16) whose first exposure of the unit the track came at or
--   after, as the worker knew it when it processed the track. A first exposure only moves earlier,
--   so such a track is never in its unit's pre-exposure window in those experiments: the CUPED
--   covariate's scan skips it without reading more (it is a filter, never the definition).
ALTER TABLE events ADD COLUMN IF NOT EXISTS value Float64 DEFAULT if(type = 'track', if(JSONType(properties, 'value') IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat(properties, 'value'), if(JSONType(properties, 'order_total') IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat(properties, 'order_total'), 0.)), 0.) COMMENT 'the track''s value as the worker counted it' AFTER properties;
ALTER TABLE events ADD COLUMN IF NOT EXISTS post_exposure Array(LowCardinality(String)) DEFAULT [] COMMENT 'experiments whose first exposure of the unit the track came after (first 16)' AFTER variant_id;

-- the view was made with the columns of its time
DROP VIEW IF EXISTS events_final;
CREATE VIEW IF NOT EXISTS events_final AS SELECT * FROM events FINAL;

