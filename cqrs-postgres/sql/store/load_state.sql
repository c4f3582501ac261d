-- State-stored aggregates: the state row.
-- $1 aggregate type, $2 aggregate id
SELECT version, state
FROM {{schema}}.aggregates
WHERE aggregate_type = $1 AND aggregate_id = $2
