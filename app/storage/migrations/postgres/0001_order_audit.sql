-- Every order is recorded here (status 'pending') before it is sent to Alpaca.
-- `json`, not `jsonb`: the text is kept exactly as written (numbers, key order), which is what
-- an audit trail needs; nothing queries inside these documents.
CREATE TABLE order_audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_order_id text        NOT NULL,
    request_id      text,
    api_key_id      text,
    request_body    json        NOT NULL,
    body_hash       text        NOT NULL,
    status          text        NOT NULL CHECK (
        status IN ('pending', 'submitted', 'rejected', 'failed', 'reconciled', 'unknown')
    ),
    alpaca_order    json,
    error_code      text,
    error_detail    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_audit_client_order_id_idx ON order_audit (client_order_id);
