-- The outbox rows of one command in one statement.
-- $1 aggregate type, $2 aggregate id, then one array per column.
INSERT INTO {{schema}}.outbox
    (id, aggregatetype, aggregateid, type, payload, tracingspancontext, sequence,
     event_version, occurred_at, correlation_id, causation_id, tenant_id)
SELECT o.id, $1::text, $2::text, o.type, o.payload, o.tracingspancontext, o.sequence,
       o.event_version, o.occurred_at, o.correlation_id, o.causation_id, o.tenant_id
FROM UNNEST($3::uuid[], $4::text[], $5::jsonb[], $6::text[], $7::bigint[], $8::integer[],
            $9::timestamptz[], $10::uuid[], $11::uuid[], $12::text[])
    AS o (id, type, payload, tracingspancontext, sequence, event_version, occurred_at,
          correlation_id, causation_id, tenant_id)
