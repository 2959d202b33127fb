-- What was recorded when work was completed through a form (a case file audit, a direct
-- observation, a moderation), kept with the assignment. Written in the completion's transaction
-- and never changed afterwards: a record is evidence, like history.
CREATE TABLE records (
    assignment_id BIGINT PRIMARY KEY REFERENCES assignments (id),
    form_id       TEXT NOT NULL,
    -- The submitted values as a JSON object keyed by field id, stored verbatim (text, not
    -- jsonb, so both backends return exactly what was written).
    fields        TEXT NOT NULL,
    submitted_by  TEXT NOT NULL,
    submitted_at  TEXT NOT NULL,
    via           TEXT NOT NULL
);

-- A moderation's judgement on each graded field of the audit it moderates (overall and each
-- golden thread): agreed, or the grade the moderator would give. One row per field, for reports.
CREATE TABLE moderation_outcomes (
    moderation_id   BIGINT NOT NULL REFERENCES assignments (id),
    audit_id        BIGINT NOT NULL REFERENCES assignments (id),
    field           TEXT NOT NULL,
    audit_grade     TEXT NOT NULL,
    agreed          BOOLEAN NOT NULL,
    moderated_grade TEXT,
    PRIMARY KEY (moderation_id, field)
);
CREATE INDEX moderation_outcomes_audit ON moderation_outcomes (audit_id);

CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION qaloop_append_only();
CREATE TRIGGER moderation_outcomes_append_only BEFORE UPDATE OR DELETE ON moderation_outcomes
    FOR EACH ROW EXECUTE FUNCTION qaloop_append_only();
