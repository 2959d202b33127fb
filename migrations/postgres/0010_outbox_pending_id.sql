-- The rows a claim can take, in queue order: a claim walks this index from the lowest id and
-- stops at its batch size, instead of reading every pending row (and its context) to sort them
-- by id, which made each claim cost more the longer the queue (BENCHMARKS.md, "Dispatch").
-- Numbered 0010: 0009 is taken on another branch.
CREATE INDEX outbox_pending_id ON outbox (id) WHERE status IN ('pending', 'failed');
