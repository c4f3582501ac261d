-- Idempotency: one row per committed command id, written in the command's transaction.
-- A second submission of the same id finds the receipt here (or, when both run at the
-- same time, the later one fails on the primary key and is answered with the first one's
-- receipt).
CREATE TABLE {{schema}}.processed_commands (
    command_id     uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    receipt        jsonb       NOT NULL,
    processed_at   timestamptz NOT NULL,
    CONSTRAINT processed_commands_pkey PRIMARY KEY (command_id)
);

ALTER TABLE {{schema}}.processed_commands REPLICA IDENTITY DEFAULT;
