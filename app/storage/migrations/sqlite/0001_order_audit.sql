-- Every order is recorded here (status 'pending') before it is sent to Alpaca.
-- JSON documents are TEXT exactly as written; timestamps are ISO 8601 UTC text.
CREATE TABLE order_audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL,
    request_id      TEXT,
    api_key_id      TEXT,
    request_body    TEXT NOT NULL CHECK (json_valid(request_body)),
    body_hash       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (
        status IN ('pending', 'submitted', 'rejected', 'failed', 'reconciled', 'unknown')
    ),
    alpaca_order    TEXT CHECK (alpaca_order IS NULL OR json_valid(alpaca_order)),
    error_code      TEXT,
    error_detail    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

CREATE INDEX order_audit_client_order_id_idx ON order_audit (client_order_id);
