-- Deletes outbox rows created before $1 (Debezium has read them from the WAL long ago).
DELETE FROM {{schema}}.outbox
WHERE created_at < $1
