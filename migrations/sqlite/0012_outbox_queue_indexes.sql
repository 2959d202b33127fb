-- Fewer indexes for a delivery to touch. Recording a delivery changes the row's status, so it
-- is never a heap-only update: every index whose predicate the sent row still meets gets a new
-- entry, one per message (on PostgreSQL, in the statement a dispatch lane's next send waits
-- on). Two of the five such indexes earned nothing:
-- - `outbox_ready` (status, next_attempt_at): every lookup of queued rows goes by
--   `outbox_pending_id` (claims walk it in id order and stop at their batch size; the health
--   check's oldest due row and the next wake-up read the queued rows, which it holds);
-- - `outbox_claim`: outcome writes find their row by id (the primary key) and check the claim
--   on it; only the lease renewal, every 100 s, looks rows up by claim, and it reads the queued
--   rows. Worse, with no statistics yet the PostgreSQL planner chose it for a delivery note
--   and read the whole claim's entries for each message.
-- Without them a note inserts into three indexes (id, key, recipient), and a claim, which
-- changes no indexed column any more, can be a heap-only update (BENCHMARKS.md, "Dispatch").
DROP INDEX outbox_ready;
DROP INDEX outbox_claim;
