-- $1 command id
SELECT receipt
FROM {{schema}}.processed_commands
WHERE command_id = $1
