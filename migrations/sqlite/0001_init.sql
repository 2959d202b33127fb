-- qaloop schema, SQLite flavour. Dates are TEXT 'YYYY-MM-DD' and instants TEXT RFC 3339 UTC with
-- microseconds ('2027-01-04T07:30:00.000000Z'): identical on both backends, sortable as text.

CREATE TABLE staff (
    staff_id        TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    roles           TEXT NOT NULL,          -- ';'-separated, sorted
    line_manager_id TEXT,
    team            TEXT NOT NULL,
    service         TEXT NOT NULL,
    locality        TEXT NOT NULL,
    chat_id         TEXT,
    start_date      TEXT,
    active_from     TEXT,                   -- NULL: active since before qaloop knew them
    left_on         TEXT,                   -- NULL while they stay
    updated_at      TEXT NOT NULL
);

CREATE TABLE staff_history (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    staff_id TEXT NOT NULL,
    event    TEXT NOT NULL CHECK (event IN ('joined', 'changed', 'left', 'rejoined')),
    actor    TEXT NOT NULL,
    at       TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''       -- names of changed fields, never their values
);
CREATE INDEX staff_history_staff ON staff_history (staff_id);

CREATE TABLE assignments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    activity_id  TEXT NOT NULL,
    period_label TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end   TEXT NOT NULL,
    slot         TEXT NOT NULL,             -- who it was created for; part of the unique key
    assignee     TEXT NOT NULL,             -- who holds it now: a staff id or 'role:NAME'
    subject      TEXT NOT NULL DEFAULT '',  -- staff id the work is about; '' for none
    trigger_id   INTEGER REFERENCES assignments (id),
    due          TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'done', 'cancelled')),
    created_at   TEXT NOT NULL,
    created_late INTEGER NOT NULL,
    completed_at TEXT,
    completed_by TEXT,
    note         TEXT,
    UNIQUE (activity_id, period_start, slot, subject)
);
CREATE INDEX assignments_open_assignee ON assignments (assignee) WHERE status = 'open';
CREATE INDEX assignments_status_due ON assignments (status, due);
CREATE INDEX assignments_period ON assignments (period_start);

CREATE TABLE assignment_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment_id INTEGER NOT NULL REFERENCES assignments (id),
    event         TEXT NOT NULL CHECK (event IN ('created', 'reassigned', 'completed', 'cancelled')),
    actor         TEXT NOT NULL,
    at            TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX assignment_history_assignment ON assignment_history (assignment_id);

-- Append-only: history rows are never changed or removed.
CREATE TRIGGER assignment_history_no_update BEFORE UPDATE ON assignment_history
BEGIN SELECT RAISE(ABORT, 'assignment_history is append-only'); END;
CREATE TRIGGER assignment_history_no_delete BEFORE DELETE ON assignment_history
BEGIN SELECT RAISE(ABORT, 'assignment_history is append-only'); END;
CREATE TRIGGER staff_history_no_update BEFORE UPDATE ON staff_history
BEGIN SELECT RAISE(ABORT, 'staff_history is append-only'); END;
CREATE TRIGGER staff_history_no_delete BEFORE DELETE ON staff_history
BEGIN SELECT RAISE(ABORT, 'staff_history is append-only'); END;

-- Which (activity, period) pairs reconcile has fully materialised: a no-op tick reads only this.
CREATE TABLE period_runs (
    activity_id  TEXT NOT NULL,
    period_start TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (activity_id, period_start)
);

-- Small facts about this database: the schedule's origin date, the staff file's digest.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
