-- Actions raised by audits, moderations, observations or by hand, tracked until verified.
CREATE TABLE actions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT NOT NULL CHECK (source IN ('audit', 'moderation', 'observation', 'manual')),
    assignment_id INTEGER REFERENCES assignments (id),
    description   TEXT NOT NULL,            -- what must change; never a child's name
    owner         TEXT NOT NULL,            -- staff id
    raised_by     TEXT NOT NULL,            -- staff id
    due           TEXT NOT NULL,
    inadequate    INTEGER NOT NULL,         -- raised from an audit graded Inadequate
    state         TEXT NOT NULL CHECK (state IN ('open', 'done', 'verified')),
    reopened      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    done_at       TEXT,
    verified_at   TEXT,
    verified_by   TEXT
);
CREATE INDEX actions_state_due ON actions (state, due);
CREATE INDEX actions_owner ON actions (owner) WHERE state <> 'verified';
CREATE INDEX actions_assignment ON actions (assignment_id);

CREATE TABLE action_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions (id),
    event     TEXT NOT NULL CHECK (event IN ('raised', 'done', 'verified', 'reopened', 'reassigned')),
    actor     TEXT NOT NULL,
    via       TEXT NOT NULL,
    at        TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''     -- the note, reason, or new due date / owner
);
CREATE INDEX action_history_action ON action_history (action_id);

CREATE TRIGGER action_history_no_update BEFORE UPDATE ON action_history
BEGIN SELECT RAISE(ABORT, 'action_history is append-only'); END;
CREATE TRIGGER action_history_no_delete BEFORE DELETE ON action_history
BEGIN SELECT RAISE(ABORT, 'action_history is append-only'); END;
