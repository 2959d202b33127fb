-- Actions raised by audits, moderations, observations or by hand, tracked until verified.
CREATE TABLE actions (
    id            BIGSERIAL PRIMARY KEY,
    source        TEXT NOT NULL CHECK (source IN ('audit', 'moderation', 'observation', 'manual')),
    assignment_id BIGINT REFERENCES assignments (id),
    description   TEXT NOT NULL,
    owner         TEXT NOT NULL,
    raised_by     TEXT NOT NULL,
    due           TEXT NOT NULL,
    inadequate    BOOLEAN NOT NULL,
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
    id        BIGSERIAL PRIMARY KEY,
    action_id BIGINT NOT NULL REFERENCES actions (id),
    event     TEXT NOT NULL CHECK (event IN ('raised', 'done', 'verified', 'reopened', 'reassigned')),
    actor     TEXT NOT NULL,
    via       TEXT NOT NULL,
    at        TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX action_history_action ON action_history (action_id);

CREATE TRIGGER action_history_append_only BEFORE UPDATE OR DELETE ON action_history
    FOR EACH ROW EXECUTE FUNCTION qaloop_append_only();
