-- `python -m app.cli errors` reads the newest rows first, optionally for some codes or for one
-- upstream; created_at alone is already indexed (0002). The upstream lives in the context
-- document, so its index is on the same expression the query uses (SQLite matches it exactly).
CREATE INDEX error_logs_code_created_at_idx ON error_logs (code, created_at);

CREATE INDEX error_logs_upstream_created_at_idx
    ON error_logs (json_extract(context, '$.upstream'), created_at);
