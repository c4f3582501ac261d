-- Least privilege for service role {{role}} on its schema {{schema}}.
--
-- Decision: the service role runs its own migrations, so it gets CREATE on its schema (and
-- owns the tables it creates). It gets nothing on any other schema: a new role has no
-- privilege on a schema unless granted, and none is granted here. (PostgreSQL 15+ no
-- longer grants CREATE on `public` to PUBLIC; the REVOKE below makes older servers behave
-- the same and is a no-op on newer ones.)
--
-- Tables created in {{schema}} by the role running this file (the admin, when it runs the
-- migrations instead of the service role) are readable and writable by the service role,
-- now and in the future (ALTER DEFAULT PRIVILEGES).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM {{role}};
GRANT USAGE, CREATE ON SCHEMA {{schema}} TO {{role}};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {{schema}} TO {{role}};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {{schema}} TO {{role}};
ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {{role}};
ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}}
    GRANT USAGE, SELECT ON SEQUENCES TO {{role}};
