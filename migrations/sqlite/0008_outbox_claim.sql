-- Which claim holds a row being sent: every outcome write names it (with the row's state), so a
-- dispatcher whose lease ran out, or a row cancelled meanwhile, is never overwritten.
ALTER TABLE outbox ADD COLUMN claim TEXT;
CREATE INDEX outbox_claim ON outbox (claim) WHERE claim IS NOT NULL;
