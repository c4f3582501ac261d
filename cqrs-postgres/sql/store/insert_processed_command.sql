-- The receipt of a command, its idempotency record. A second commit of the same command
-- id fails on processed_commands_pkey: a duplicate command.
-- $1 command id, $2 type, $3 id, $4 version, $5 receipt, $6 processed at
INSERT INTO {{schema}}.processed_commands
    (command_id, aggregate_type, aggregate_id, version, receipt, processed_at)
VALUES ($1, $2, $3, $4, $5, $6)
