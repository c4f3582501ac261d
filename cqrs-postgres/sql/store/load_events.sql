-- $1 aggregate type, $2 aggregate id, $3 events after this sequence
SELECT sequence, event_id, event_type, event_version, payload, metadata, occurred_at
FROM {{schema}}.events
WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
ORDER BY sequence
