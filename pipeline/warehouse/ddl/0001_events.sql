-- Canonical events, one row per message id and org.
-- ReplacingMergeTree on (org_id, message_id): a replay of the same raw record after a worker
-- crash writes an identical row, which merges away; exact reads use FINAL or events_final.
-- Partitioned by the month the gateway received the event (see 0004_fenced_rows.sql for why):
-- a replayed row lands in the partition its first copy did (received_at is in the raw record).
CREATE TABLE IF NOT EXISTS events
(
    org_id        LowCardinality(String),
    project_id    LowCardinality(String),
    env           LowCardinality(String),
    message_id    String,
    family        LowCardinality(String),
    type          LowCardinality(String),
    event         String,
    user_id       String,
    anonymous_id  String,
    unit_key      String,
    session_id    String,
    timestamp     DateTime64(3, 'UTC'),
    received_at   DateTime64(3, 'UTC'),
    sent_at       Nullable(DateTime64(3, 'UTC')),
    original_timestamp String DEFAULT '' COMMENT 'the client''s time as sent, when received_at replaced it (flag timestamp_replaced)',
    properties    String COMMENT 'JSON object',
    context       String COMMENT 'JSON object',
    traits        String COMMENT 'JSON object',
    experiment_id String,
    variant_id    String,
    decision_id   String,
    page_url      String,
    group_id      String,
    previous_id   String,
    flags         Array(LowCardinality(String)) COMMENT 'timestamp_replaced: the client time was outside the trusted window',
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (org_id, message_id);

CREATE VIEW IF NOT EXISTS events_final AS SELECT * FROM events FINAL;
