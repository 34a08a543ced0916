#!/bin/sh
# MLflow tracking server for the production stack, with basic-auth on.
#
# Renders the basic-auth config (MLFLOW_AUTH_CONFIG_PATH) from the environment at start, into a
# private temporary directory, points the server at Postgres, and runs `mlflow server "$@"` (the flags,
# --app-name basic-auth and --artifacts-destination s3://..., are compose.yaml's `command:`).
# MLflow ships no default admin password: MLFLOW_ADMIN_PASSWORD creates the admin user on the first
# start only (an empty user store); later changes to it are ignored -- rotate through the API.
set -eu

fail() { echo "mlflow-entrypoint: $*" >&2; exit 1; }

for var in MLFLOW_DB_PASSWORD MLFLOW_ADMIN_USERNAME MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY \
           AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    eval "val=\${$var:-}"
    [ -n "$val" ] || fail "$var is not set (run infra/compose/generate-secrets.sh)"
done
unset val

DB_HOST="${MLFLOW_DB_HOST:-postgres}"
DB_PORT="${MLFLOW_DB_PORT:-5432}"
DB_USER="${MLFLOW_DB_USER:-mlflow}"

# URL-encode the password for the SQLAlchemy URIs, then double every % for configparser.
pw_url=$(python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$MLFLOW_DB_PASSWORD")
backend_uri="postgresql+psycopg2://${DB_USER}:${pw_url}@${DB_HOST}:${DB_PORT}/mlflow"
auth_uri="postgresql+psycopg2://${DB_USER}:${pw_url}@${DB_HOST}:${DB_PORT}/mlflow_auth"
ini_escape() { printf '%s' "$1" | sed 's/%/%%/g'; }
case "$MLFLOW_ADMIN_USERNAME$MLFLOW_ADMIN_PASSWORD" in
    *"
"*) fail "MLFLOW_ADMIN_USERNAME / MLFLOW_ADMIN_PASSWORD must be one line" ;;
esac

umask 077
conf_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
cat > "$conf_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = $(ini_escape "$auth_uri")
admin_username = $(ini_escape "$MLFLOW_ADMIN_USERNAME")
admin_password = $(ini_escape "$MLFLOW_ADMIN_PASSWORD")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
INI
export MLFLOW_AUTH_CONFIG_PATH="$conf_dir/basic_auth.ini"
# Passed through the environment, not argv: argv (with the password) is world-readable in ps.
export MLFLOW_BACKEND_STORE_URI="$backend_uri"
# The rendered file and MLFLOW_BACKEND_STORE_URI hold these now; keep them out of the server's environment.
unset MLFLOW_DB_PASSWORD MLFLOW_ADMIN_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD 2>/dev/null || true

# The server's flags come from compose.yaml's `command:`; refuse to serve without authentication.
case " $* " in
    *" --app-name basic-auth "*) ;;
    *) fail "refusing to start without --app-name basic-auth (got: $*)" ;;
esac
exec mlflow server "$@"
