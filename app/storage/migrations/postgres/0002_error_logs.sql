CREATE TABLE error_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text,
    code       text        NOT NULL,
    message    text        NOT NULL,
    context    json        NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX error_logs_created_at_idx ON error_logs (created_at);
