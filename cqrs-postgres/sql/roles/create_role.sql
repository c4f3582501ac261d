-- A new service role: no superuser, no role or database creation, no replication, no
-- row-security bypass. {{login}} is LOGIN (with a password) or NOLOGIN (a group role that
-- leased users, for example Vault's, are made members of).
CREATE ROLE {{role}} {{login}} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT
