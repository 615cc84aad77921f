-- A rollup insert whose answer is lost (a timeout, the server restarting after it committed) is
-- retried by the worker with the same bytes. Counts are not idempotent, so the table must drop
-- the second copy: ClickHouse deduplicates identical insert blocks by their hash (replicated
-- tables always; a plain MergeTree with this window). Two different batches never produce the
-- same block: every row carries its batch's fence (source partition and last offset).
ALTER TABLE rollups_1m MODIFY SETTING non_replicated_deduplication_window = 1000;
