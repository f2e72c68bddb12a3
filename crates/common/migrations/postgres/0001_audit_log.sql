CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    request_id TEXT,
    details    TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);
CREATE INDEX audit_log_time_idx   ON audit_log (time_ms);
CREATE INDEX audit_log_action_idx ON audit_log (action, time_ms);
CREATE INDEX audit_log_actor_idx  ON audit_log (actor, time_ms);
CREATE INDEX audit_log_target_idx ON audit_log (target, time_ms);

-- The last seq and hash: writers lock this row, so two writers never fork the chain, and
-- verify_chain() compares it with the last row, so a deleted tail is caught.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only: the application never updates or deletes rows; this refuses it by accident too.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
