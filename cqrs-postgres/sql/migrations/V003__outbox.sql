-- Transactional outbox, in the layout of Debezium's outbox event router
-- (io.debezium.transforms.outbox.EventRouter) with its default column names:
--   id                 -> table.field.event.id       (event id, a UUIDv7)
--   aggregatetype      -> route.by.field             (topic outbox.event.<aggregatetype>)
--   aggregateid        -> table.field.event.key      (Kafka message key)
--   type               -> table.field.event.type
--   payload            -> table.field.event.payload  (jsonb)
--   tracingspancontext -> tracing.span.context.field (java.util.Properties text holding
--                         the W3C traceparent/tracestate)
-- The other columns can be placed into headers with table.fields.additional.placement.
--
-- Rows are only inserted by commands (REPLICA IDENTITY DEFAULT: no before image exists
-- for an insert). Published rows can be pruned by id: ids are UUIDv7, ordered by time.
CREATE TABLE {{schema}}.outbox (
    id                 uuid        NOT NULL,
    aggregatetype      text        NOT NULL,
    aggregateid        text        NOT NULL,
    type               text        NOT NULL,
    payload            jsonb       NOT NULL,
    tracingspancontext text,
    sequence           bigint      NOT NULL,
    event_version      integer     NOT NULL,
    occurred_at        timestamptz NOT NULL,
    correlation_id     uuid        NOT NULL,
    causation_id       uuid        NOT NULL,
    tenant_id          text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_pkey PRIMARY KEY (id)
);

ALTER TABLE {{schema}}.outbox REPLICA IDENTITY DEFAULT;
