CREATE TABLE error_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT,
    code       TEXT NOT NULL,
    message    TEXT NOT NULL,
    context    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(context)),
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX error_logs_created_at_idx ON error_logs (created_at);
