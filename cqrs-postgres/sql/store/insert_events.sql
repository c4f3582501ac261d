-- All events of one command in one statement (arrays unnested into rows).
-- $1 type, $2 id, then one array per column.
INSERT INTO {{schema}}.events
    (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, payload,
     metadata, occurred_at)
SELECT $1::text, $2::text, e.sequence, e.event_id, e.event_type, e.event_version, e.payload,
       e.metadata, e.occurred_at
FROM UNNEST($3::bigint[], $4::uuid[], $5::text[], $6::integer[], $7::jsonb[], $8::jsonb[],
            $9::timestamptz[])
    AS e (sequence, event_id, event_type, event_version, payload, metadata, occurred_at)
