-- only-if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('events', 'events_local') AND engine LIKE '%MergeTree' AND partition_key NOT LIKE '%received_at%'
-- (A warehouse created with this version's 0001/0002 has these forms already; only an older one
-- is rebuilt. Upgrade with one worker running: the rebuild is not safe against a concurrent one.)
--
-- Rows a stalled (fenced) worker may write again must be harmless, and no insert may touch an
-- unbounded number of partitions (see pipeline/keyed.py, docs/effectively-once.md):
--
-- * events: partitioned by the month the gateway received the event, not by the client's
--   timestamp. A batch is a short run of consecutive records, so its rows fall in one or two
--   partitions whatever timestamps clients send; a replay of a record lands where its first
--   copy did (received_at travels in the raw record). original_timestamp keeps what the client
--   sent when its time was unusable and was replaced by the received time.
-- * users, companies, experiment_units: versioned by the source offset of the last record that
--   changed them (a key lives in one partition, so offsets order its changes). A late write by a
--   worker that lost the partition carries an older version and loses; the same version is
--   the same content.
-- * rollups_1m: one row per source record and group, replacing on (group, source partition,
--   source offset): a record counted twice (a replay, a fenced worker's last batch) writes the
--   same row again, which replaces the first. Read through exposures_1m / tracks_1m (FINAL).

-- Each table is rebuilt through a copy (create, copy, drop, create, copy back, drop): plain
-- statements that also have a cluster form (pipeline/warehouse/cluster.py).

DROP VIEW IF EXISTS events_final;
DROP VIEW IF EXISTS users_final;
DROP VIEW IF EXISTS companies_final;
DROP VIEW IF EXISTS experiment_units_final;
DROP VIEW IF EXISTS exposures_1m;
DROP VIEW IF EXISTS tracks_1m;

ALTER TABLE events ADD COLUMN IF NOT EXISTS original_timestamp String DEFAULT '' COMMENT 'the client''s time as sent, when received_at replaced it (flag timestamp_replaced)' AFTER sent_at;
ALTER TABLE users ADD COLUMN IF NOT EXISTS version UInt64 DEFAULT 0;
ALTER TABLE companies ADD COLUMN IF NOT EXISTS version UInt64 DEFAULT 0;
ALTER TABLE experiment_units ADD COLUMN IF NOT EXISTS version UInt64 DEFAULT 0;

CREATE TABLE IF NOT EXISTS events_rebuilt AS events ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(received_at) ORDER BY (org_id, message_id);
INSERT INTO events_rebuilt SELECT * FROM events;
DROP TABLE events;
CREATE TABLE IF NOT EXISTS events AS events_rebuilt ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(received_at) ORDER BY (org_id, message_id);
INSERT INTO events SELECT * FROM events_rebuilt;
DROP TABLE events_rebuilt;

CREATE TABLE IF NOT EXISTS users_rebuilt AS users ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, user_id);
INSERT INTO users_rebuilt SELECT * FROM users;
DROP TABLE users;
CREATE TABLE IF NOT EXISTS users AS users_rebuilt ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, user_id);
INSERT INTO users SELECT * FROM users_rebuilt;
DROP TABLE users_rebuilt;

CREATE TABLE IF NOT EXISTS companies_rebuilt AS companies ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, company_id);
INSERT INTO companies_rebuilt SELECT * FROM companies;
DROP TABLE companies;
CREATE TABLE IF NOT EXISTS companies AS companies_rebuilt ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, company_id);
INSERT INTO companies SELECT * FROM companies_rebuilt;
DROP TABLE companies_rebuilt;

CREATE TABLE IF NOT EXISTS experiment_units_rebuilt AS experiment_units ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, experiment_id, variant_id, unit_key);
INSERT INTO experiment_units_rebuilt SELECT * FROM experiment_units;
DROP TABLE experiment_units;
CREATE TABLE IF NOT EXISTS experiment_units AS experiment_units_rebuilt ENGINE = ReplacingMergeTree(version) ORDER BY (org_id, experiment_id, variant_id, unit_key);
INSERT INTO experiment_units SELECT * FROM experiment_units_rebuilt;
DROP TABLE experiment_units_rebuilt;

CREATE TABLE IF NOT EXISTS rollups_1m_rebuilt AS rollups_1m ENGINE = ReplacingMergeTree ORDER BY (org_id, kind, experiment_id, variant_id, event, minute, source_partition, source_offset);
INSERT INTO rollups_1m_rebuilt SELECT * FROM rollups_1m;
DROP TABLE rollups_1m;
CREATE TABLE IF NOT EXISTS rollups_1m AS rollups_1m_rebuilt ENGINE = ReplacingMergeTree ORDER BY (org_id, kind, experiment_id, variant_id, event, minute, source_partition, source_offset);
INSERT INTO rollups_1m SELECT * FROM rollups_1m_rebuilt;
DROP TABLE rollups_1m_rebuilt;

CREATE VIEW IF NOT EXISTS events_final AS SELECT * FROM events FINAL;
CREATE VIEW IF NOT EXISTS users_final AS SELECT * FROM users FINAL;
CREATE VIEW IF NOT EXISTS companies_final AS SELECT * FROM companies FINAL;
CREATE VIEW IF NOT EXISTS experiment_units_final AS SELECT * FROM experiment_units FINAL;

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
