-- Bookkeeping of the migrations applied to this schema. Created (if missing) by the
-- migrator while it holds the schema's advisory lock, before anything else runs.
-- {{schema}} is replaced by the validated, quoted schema name.
CREATE TABLE IF NOT EXISTS {{schema}}.cqrs_migrations (
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text        NOT NULL DEFAULT current_user,
    duration_ms bigint      NOT NULL,
    CONSTRAINT cqrs_migrations_pkey PRIMARY KEY (version)
);
