-- The optimistic concurrency check: moves the aggregate from the expected version to the
-- new one; 0 rows updated means another writer got there first. Without a new state or
-- snapshot ($5 and $6 NULL) the stored one is kept.
-- $1 type, $2 id, $3 expected version, $4 new version, $5 state/snapshot, $6 its version
UPDATE {{schema}}.aggregates
SET version          = $4,
    state            = COALESCE($5, state),
    snapshot_version = COALESCE($6, snapshot_version),
    updated_at       = now()
WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3
