-- CUPED's covariate (pipeline/results/sql.py): each unit's tracks of one event in the 14 days
-- before its first exposure. From events (ORDER BY (org_id, message_id)) a filter on org, event
-- and time reads every row of the org; this narrow copy of the tracks is ordered for that read —
-- a range of (org_id, event, timestamp) — and holds only what the covariate needs.
--
-- Filled by ClickHouse from every insert into events (a materialized view): the worker writes
-- nothing more. Exact under replays as events is: a replayed track writes an identical row (the
-- same message, unit, time and value), which merges away, and the results count one row per
-- (message id hash, time, value) per unit, so copies count once before they merge.
--
-- value: the track's `value` property if numeric, else NULL; then properties holds the track's
-- properties for the configured value property (SLUICE_VALUE_PROPERTY, read at query time), and
-- is '' when value is set. Partitioned like events by the month received, so an insert touches
-- one or two partitions whatever timestamps clients send (0004_fenced_rows.sql).
CREATE TABLE IF NOT EXISTS tracks_by_unit
(
    org_id       LowCardinality(String),
    event        String,
    unit_key     String,
    timestamp    DateTime64(3, 'UTC'),
    message_hash UInt64 COMMENT 'cityHash64(message_id)',
    value        Nullable(Float64) COMMENT 'the value property if numeric',
    properties   String COMMENT 'the properties (JSON) when value is NULL, else empty',
    received_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (org_id, event, timestamp, message_hash);

CREATE MATERIALIZED VIEW IF NOT EXISTS tracks_by_unit_mv TO tracks_by_unit AS
SELECT org_id, event, unit_key, timestamp, message_hash, value, kept AS properties, received_at FROM (
    SELECT org_id, event, unit_key, timestamp, cityHash64(message_id) AS message_hash,
           JSONType(properties, 'value') IN ('Int64', 'UInt64', 'Double') AS numeric,
           if(numeric, JSONExtractFloat(properties, 'value'), NULL) AS value, if(numeric, '', properties) AS kept, received_at
    FROM events WHERE type = 'track'
);

-- the tracks already in events (after the view: a track inserted meanwhile is in both, and counts once)
INSERT INTO tracks_by_unit
SELECT org_id, event, unit_key, timestamp, message_hash, value, kept AS properties, received_at FROM (
    SELECT org_id, event, unit_key, timestamp, cityHash64(message_id) AS message_hash,
           JSONType(properties, 'value') IN ('Int64', 'UInt64', 'Double') AS numeric,
           if(numeric, JSONExtractFloat(properties, 'value'), NULL) AS value, if(numeric, '', properties) AS kept, received_at
    FROM events WHERE type = 'track'
);
