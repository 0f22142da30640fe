#!/bin/sh
# 10-app-role.sh: the role the api, the worker and the seed connect as (docker-compose.yml).
#
# The postgres image runs the scripts of /docker-entrypoint-initdb.d once, when it
# creates the cluster on an empty `pgdata` volume, as POSTGRES_USER (the owner: it runs
# the migrations, so it owns every table). This creates POSTGRES_APP_USER (default
# rbmrec_app), which may log in to POSTGRES_DB and read and change rows, nothing else:
# no superuser, no CREATE on the schema (no new tables, no DDL), no other database.
# Default privileges extend that to every table and sequence the owner creates later
# (each migration's), and the grants ON ALL cover those that already exist.
#
# A volume created before this script existed: run it once by hand (it is idempotent):
#   docker compose exec db sh /docker-entrypoint-initdb.d/10-app-role.sh
set -eu

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_APP_USER:=rbmrec_app}"
: "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD (make env writes one into .env)}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
	-v app_user="$POSTGRES_APP_USER" -v app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
-- TEMPORARY: the importer stages a file's ratings in a temporary table
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app_user";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_user";

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_user";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app_user";
SQL
echo "10-app-role.sh: role $POSTGRES_APP_USER may read and write the rows of $POSTGRES_DB"
