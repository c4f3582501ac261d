-- A new aggregate (expected version 0). A concurrent creator makes this fail on
-- aggregates_pkey: a concurrency conflict.
-- $1 type, $2 id, $3 new version, $4 state or snapshot (NULL: none), $5 its version
INSERT INTO {{schema}}.aggregates (aggregate_type, aggregate_id, version, state, snapshot_version)
VALUES ($1, $2, $3, $4, $5)
