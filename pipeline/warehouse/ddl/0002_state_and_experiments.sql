-- Users, companies, aliases, experiment units, rollups and the dead-letter table.
--
-- How each stays exact under replays (see pipeline/processor.py):
-- * users, companies, experiment_units: the worker holds the state (pipeline/statestore.py,
--   merged with idempotent rules: min, max, last-writer-wins per trait, set union) and writes the
--   whole current record, versioned by the source offset of the last record that changed it;
--   ReplacingMergeTree(version) keeps the newest, and a replay rewrites the same record. Read
--   with FINAL (or the *_final views).
-- * rollups_1m: one row per source record and group, keyed by the record's partition and offset:
--   a record counted twice writes the same row again, which replaces the first. Exposures and
--   tracks share the table; read them through exposures_1m and tracks_1m (FINAL inside).
-- * dlq: keyed by where the letter sits in the DLQ topic.

CREATE TABLE IF NOT EXISTS users
(
    org_id      LowCardinality(String),
    user_id     String,
    first_seen  DateTime64(3, 'UTC'),
    last_seen   DateTime64(3, 'UTC'),
    traits      String COMMENT 'JSON object, merged: the newest value of each trait',
    company_ids Array(String),
    updated_at  DateTime64(6, 'UTC') DEFAULT now64(6),
    version     UInt64 DEFAULT 0 COMMENT 'source offset of the last record that changed the user'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, user_id);

CREATE TABLE IF NOT EXISTS companies
(
    org_id      LowCardinality(String),
    company_id  String,
    first_seen  DateTime64(3, 'UTC'),
    last_seen   DateTime64(3, 'UTC'),
    traits      String COMMENT 'JSON object, merged: the newest value of each trait',
    updated_at  DateTime64(6, 'UTC') DEFAULT now64(6),
    version     UInt64 DEFAULT 0 COMMENT 'source offset of the last record that changed the company'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, company_id);

CREATE TABLE IF NOT EXISTS user_aliases
(
    org_id      LowCardinality(String),
    previous_id String,
    user_id     String,
    aliased_at  DateTime64(3, 'UTC'),
    message_id  String
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, previous_id, user_id);

CREATE TABLE IF NOT EXISTS experiment_units
(
    org_id           LowCardinality(String),
    project_id       LowCardinality(String),
    env              LowCardinality(String),
    experiment_id    String,
    variant_id       String,
    unit_key         String,
    assigned_at      Nullable(DateTime64(3, 'UTC')) COMMENT 'first decision (intent to treat)',
    first_exposed_at Nullable(DateTime64(3, 'UTC')),
    converted_at     Nullable(DateTime64(3, 'UTC')) COMMENT 'first attributed track event',
    conversions      Map(String, DateTime64(3, 'UTC')) COMMENT 'first time of each attributed event',
    variants_seen    UInt16 COMMENT 'variants of this experiment the unit was exposed to',
    updated_at       DateTime64(6, 'UTC') DEFAULT now64(6),
    version          UInt64 DEFAULT 0 COMMENT 'source offset of the last record that changed the unit'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, experiment_id, variant_id, unit_key);

CREATE TABLE IF NOT EXISTS rollups_1m
(
    org_id           LowCardinality(String),
    project_id       LowCardinality(String),
    env              LowCardinality(String),
    kind             LowCardinality(String) COMMENT 'exposure or track',
    experiment_id    String,
    variant_id       String,
    event            String,
    minute           DateTime('UTC'),
    count            UInt64,
    units            UInt64 COMMENT 'exposure: units first exposed, track: units first converting on this event',
    value_sum        Float64,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64 COMMENT 'offset of the keyed record these counts came from'
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, kind, experiment_id, variant_id, event, minute, source_partition, source_offset);

CREATE VIEW IF NOT EXISTS exposures_1m AS
SELECT org_id, project_id, env, experiment_id, variant_id, minute,
       sum(count) AS exposures, sum(units) AS units
FROM rollups_1m FINAL WHERE kind = 'exposure'
GROUP BY org_id, project_id, env, experiment_id, variant_id, minute;

CREATE VIEW IF NOT EXISTS tracks_1m AS
SELECT org_id, project_id, env, experiment_id, variant_id, event, minute,
       sum(count) AS tracks, sum(units) AS units, sum(value_sum) AS value_sum
FROM rollups_1m FINAL WHERE kind = 'track'
GROUP BY org_id, project_id, env, experiment_id, variant_id, event, minute;

CREATE VIEW IF NOT EXISTS users_final AS SELECT * FROM users FINAL;
CREATE VIEW IF NOT EXISTS companies_final AS SELECT * FROM companies FINAL;
CREATE VIEW IF NOT EXISTS experiment_units_final AS SELECT * FROM experiment_units FINAL;

CREATE TABLE IF NOT EXISTS dlq
(
    id          String COMMENT 'topic:partition:offset of the letter',
    org_id      LowCardinality(String),
    family      LowCardinality(String),
    route       String,
    source      LowCardinality(String) COMMENT 'gateway or worker',
    reason      String,
    payload     String COMMENT 'the event as it arrived',
    event_index Nullable(UInt32),
    received_at DateTime64(3, 'UTC'),
    project_id  String,
    env         String,
    batch       String COMMENT 'JSON: batch-level fields the event inherits (user_id, session_id…)'
)
ENGINE = ReplacingMergeTree
ORDER BY (org_id, id);
