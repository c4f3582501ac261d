-- One row per aggregate: its current version, the optimistic concurrency guard of every
-- commit (UPDATE ... WHERE version = expected; INSERT for a new aggregate), for both
-- persistence modes.
--
-- * state-stored aggregates: `state` is the current state, `snapshot_version` = version.
-- * event-sourced aggregates: `state` is the latest snapshot (NULL before the first one)
--   and `snapshot_version` the version it reflects; the events after it are in `events`.
--
-- REPLICA IDENTITY DEFAULT (the primary key). An UPDATE publishes the complete new row
-- (version and state), which is all a version-guarded projection needs; FULL would also
-- write the complete old state into the WAL on every command, doubling the WAL volume of
-- the hot path for a before image nobody reads. A DELETE still publishes the key.
--
-- fillfactor 80 leaves room on each page so that version updates stay HOT (no index
-- column changes).
CREATE TABLE {{schema}}.aggregates (
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    version          bigint      NOT NULL,
    state            jsonb,
    snapshot_version bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT aggregates_pkey PRIMARY KEY (aggregate_type, aggregate_id),
    CONSTRAINT aggregates_version_positive CHECK (version > 0),
    CONSTRAINT aggregates_snapshot_in_range
        CHECK (snapshot_version IS NULL OR snapshot_version BETWEEN 1 AND version),
    CONSTRAINT aggregates_state_has_version CHECK ((state IS NULL) = (snapshot_version IS NULL))
) WITH (fillfactor = 80);

ALTER TABLE {{schema}}.aggregates REPLICA IDENTITY DEFAULT;
