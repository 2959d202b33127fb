-- Work whose due date had already passed when qaloop went live (created by the first pass of a
-- new database): listed and shown once in the welcome message, never chased or escalated.
ALTER TABLE assignments ADD COLUMN before_go_live BOOLEAN NOT NULL DEFAULT false;
-- Who has ever been sent a message (the welcome goes to those who have not).
CREATE INDEX outbox_recipient ON outbox (recipient);
