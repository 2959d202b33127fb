-- Urgent and health concerns recorded in audits: alerted at once, re-alerted until someone
-- acknowledges. Written once and acknowledged once (the acknowledgement is a guarded write that
-- only succeeds while none is recorded), so the row is its own audit trail.
CREATE TABLE concerns (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment_id    INTEGER NOT NULL REFERENCES assignments (id),
    case_reference   TEXT NOT NULL,           -- a reference, never a name
    kind             TEXT NOT NULL CHECK (kind IN ('urgent', 'health')),
    raised_by        TEXT NOT NULL,
    raised_via       TEXT NOT NULL,
    raised_at        TEXT NOT NULL,
    acknowledged_by  TEXT,
    acknowledged_via TEXT,
    acknowledged_at  TEXT,
    acknowledgement  TEXT,                    -- what the acknowledger did next
    health_informed  INTEGER,                   -- health concerns: raised with the health service
    UNIQUE (assignment_id, kind)
);
CREATE INDEX concerns_open ON concerns (raised_at) WHERE acknowledged_at IS NULL;
