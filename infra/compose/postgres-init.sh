#!/bin/bash
# Runs once, on the first start of an empty data volume (/docker-entrypoint-initdb.d).
# One Postgres instance, one role per service, each owning only its own databases:
#   mlflow  -> databases mlflow (tracking + registry) and mlflow_auth (basic-auth users)
#   prefect -> database prefect
#   arena   -> database arena (the arena's votes)
# CONNECT is revoked from PUBLIC, so neither role can open the other's databases.
# Passwords are passed as psql variables (:'var' quotes them), never spliced into SQL text.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (run infra/compose/generate-secrets.sh)}"
: "${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD (run infra/compose/generate-secrets.sh)}"
: "${ARENA_DB_PASSWORD:?set ARENA_DB_PASSWORD (run infra/compose/generate-secrets.sh)}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v prefect_pw="$PREFECT_DB_PASSWORD" -v arena_pw="$ARENA_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE ROLE arena LOGIN PASSWORD :'arena_pw';

CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
CREATE DATABASE arena OWNER arena;

REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;
REVOKE ALL ON DATABASE arena FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow TO mlflow;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow_auth TO mlflow;
GRANT CONNECT, TEMPORARY ON DATABASE prefect TO prefect;
GRANT CONNECT, TEMPORARY ON DATABASE arena TO arena;

-- Prefect's migrations use trigram indexes; create the extension as superuser up front.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
