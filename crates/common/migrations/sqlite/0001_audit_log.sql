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

-- The last seq and hash, compared with the last row by verify_chain(), so a deleted tail is caught.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only: the application never updates or deletes rows; this refuses it by accident too.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
