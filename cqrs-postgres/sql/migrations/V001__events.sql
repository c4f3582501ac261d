-- Append-only event streams of the event-sourced aggregates of this service.
--
-- One stream per (aggregate_type, aggregate_id); `sequence` numbers its events 1, 2, 3, ...
-- The primary key on (aggregate_type, aggregate_id, sequence) is the second guard of the
-- optimistic concurrency check (the first is aggregates.version): two writers can never
-- both append the same sequence number.
--
-- REPLICA IDENTITY DEFAULT (the primary key): rows are only ever inserted, so there is no
-- before image to publish.
CREATE TABLE {{schema}}.events (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    event_version  integer     NOT NULL,
    payload        jsonb       NOT NULL,
    -- correlation_id, causation_id, tenant_id, trace_context
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_sequence_key PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_sequence_positive CHECK (sequence > 0),
    CONSTRAINT events_event_version_positive CHECK (event_version > 0)
);

ALTER TABLE {{schema}}.events REPLICA IDENTITY DEFAULT;

-- Append-only for real: updates and deletes are refused (TRUNCATE and DROP stay possible
-- for the owner, for tests and data-protection erasure done deliberately).
CREATE FUNCTION {{schema}}.cqrs_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON {{schema}}.events
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.cqrs_events_append_only();
