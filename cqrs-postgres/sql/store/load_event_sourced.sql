-- The latest snapshot (kind 0, at most one row) and the events after it (kind 1, in
-- sequence order), read in ONE statement so that both come from the same snapshot of the
-- database even while other commands commit.
-- $1 aggregate type, $2 aggregate id
SELECT 0                  AS kind,
       a.snapshot_version AS sequence,
       NULL::uuid         AS event_id,
       NULL::text         AS event_type,
       NULL::integer      AS event_version,
       a.state            AS payload,
       NULL::jsonb        AS metadata,
       NULL::timestamptz  AS occurred_at,
       a.version          AS version
FROM {{schema}}.aggregates a
WHERE a.aggregate_type = $1 AND a.aggregate_id = $2
UNION ALL
SELECT 1, e.sequence, e.event_id, e.event_type, e.event_version, e.payload, e.metadata,
       e.occurred_at, NULL
FROM {{schema}}.events e
WHERE e.aggregate_type = $1
  AND e.aggregate_id = $2
  AND e.sequence > COALESCE((SELECT s.snapshot_version
                             FROM {{schema}}.aggregates s
                             WHERE s.aggregate_type = $1 AND s.aggregate_id = $2), 0)
ORDER BY kind, sequence
