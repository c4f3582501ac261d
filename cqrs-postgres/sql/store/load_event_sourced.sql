-- The aggregates row (version, latest snapshot) and the events after the snapshot, in ONE
-- statement so that both come from the same snapshot of the database even while other
-- commands commit. One row per event after the snapshot (or a single row without event
-- columns when there is none); the snapshot state is sent on the first row only. No row
-- at all: the aggregate does not exist yet (the aggregates row is written by every commit).
-- $1 aggregate type, $2 aggregate id
SELECT a.version,
       a.snapshot_version,
       CASE WHEN e.sequence IS NULL OR e.sequence = COALESCE(a.snapshot_version, 0) + 1
            THEN a.state END AS state,
       e.sequence, e.event_id, e.event_type, e.event_version, e.payload, e.metadata,
       e.occurred_at
FROM {{schema}}.aggregates a
LEFT JOIN LATERAL (
    SELECT x.sequence, x.event_id, x.event_type, x.event_version, x.payload, x.metadata,
           x.occurred_at
    FROM {{schema}}.events x
    WHERE x.aggregate_type = a.aggregate_type
      AND x.aggregate_id = a.aggregate_id
      AND x.sequence > COALESCE(a.snapshot_version, 0)
    ORDER BY x.sequence
) e ON true
WHERE a.aggregate_type = $1 AND a.aggregate_id = $2
ORDER BY e.sequence
