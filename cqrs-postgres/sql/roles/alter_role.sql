-- An existing service role (checked beforehand to have none of the elevated attributes):
-- only its login and password are updated.
ALTER ROLE {{role}} {{login}}
