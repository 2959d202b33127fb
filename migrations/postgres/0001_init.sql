-- qaloop schema, PostgreSQL flavour. Dates are TEXT 'YYYY-MM-DD' and instants TEXT RFC 3339 UTC
-- with microseconds: identical on both backends and sortable, so one set of queries serves both.

CREATE TABLE staff (
    staff_id        TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    roles           TEXT NOT NULL,
    line_manager_id TEXT,
    team            TEXT NOT NULL,
    service         TEXT NOT NULL,
    locality        TEXT NOT NULL,
    chat_id         TEXT,
    start_date      TEXT,
    active_from     TEXT,
    left_on         TEXT,
    updated_at      TEXT NOT NULL
);

CREATE TABLE staff_history (
    id       BIGSERIAL PRIMARY KEY,
    staff_id TEXT NOT NULL,
    event    TEXT NOT NULL CHECK (event IN ('joined', 'changed', 'left', 'rejoined')),
    actor    TEXT NOT NULL,
    at       TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX staff_history_staff ON staff_history (staff_id);

CREATE TABLE assignments (
    id           BIGSERIAL PRIMARY KEY,
    activity_id  TEXT NOT NULL,
    period_label TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end   TEXT NOT NULL,
    slot         TEXT NOT NULL,
    assignee     TEXT NOT NULL,
    subject      TEXT NOT NULL DEFAULT '',
    trigger_id   BIGINT REFERENCES assignments (id),
    due          TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'done', 'cancelled')),
    created_at   TEXT NOT NULL,
    created_late BOOLEAN NOT NULL,
    completed_at TEXT,
    completed_by TEXT,
    note         TEXT,
    UNIQUE (activity_id, period_start, slot, subject)
);
CREATE INDEX assignments_open_assignee ON assignments (assignee) WHERE status = 'open';
CREATE INDEX assignments_status_due ON assignments (status, due);
CREATE INDEX assignments_period ON assignments (period_start);

CREATE TABLE assignment_history (
    id            BIGSERIAL PRIMARY KEY,
    assignment_id BIGINT NOT NULL REFERENCES assignments (id),
    event         TEXT NOT NULL CHECK (event IN ('created', 'reassigned', 'completed', 'cancelled')),
    actor         TEXT NOT NULL,
    at            TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX assignment_history_assignment ON assignment_history (assignment_id);

-- Append-only: history rows are never changed or removed.
CREATE FUNCTION qaloop_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER assignment_history_append_only BEFORE UPDATE OR DELETE ON assignment_history
    FOR EACH ROW EXECUTE FUNCTION qaloop_append_only();
CREATE TRIGGER staff_history_append_only BEFORE UPDATE OR DELETE ON staff_history
    FOR EACH ROW EXECUTE FUNCTION qaloop_append_only();

CREATE TABLE period_runs (
    activity_id  TEXT NOT NULL,
    period_start TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (activity_id, period_start)
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
