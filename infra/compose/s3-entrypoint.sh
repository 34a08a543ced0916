#!/bin/sh
# SeaweedFS for the production stack: renders the S3 identity file from the environment,
# starts master + volume + filer + S3 gateway in one process, then creates the buckets.
#
# Two S3 identities, each limited to its own bucket:
#   mlflow    (S3_MLFLOW_ACCESS_KEY / S3_MLFLOW_SECRET_KEY)       -> bucket "mlflow"    (MLflow's artifact proxy)
#   alignflow (S3_ALIGNFLOW_ACCESS_KEY / S3_ALIGNFLOW_SECRET_KEY) -> bucket "alignflow" (workers: datasets, checkpoints)
# With -s3.config set, requests signed with any other key are refused (SignatureDoesNotMatch /
# AccessDenied); there is no anonymous access.
#
# POSIX sh: the chrislusf/seaweedfs image is Alpine (busybox).
set -eu

WEED="${WEED_BIN:-weed}"
DATA_DIR="${SEAWEED_DATA_DIR:-/data}"
S3_CONFIG="${SEAWEED_S3_CONFIG:-/etc/seaweedfs/s3.json}"
READY_FILE="${SEAWEED_READY_FILE:-/tmp/s3-buckets-ready}"
BUCKETS="mlflow alignflow"

fail() { echo "s3-entrypoint: $*" >&2; exit 1; }

for var in S3_MLFLOW_ACCESS_KEY S3_MLFLOW_SECRET_KEY S3_ALIGNFLOW_ACCESS_KEY S3_ALIGNFLOW_SECRET_KEY; do
    eval "val=\${$var:-}"
    [ -n "$val" ] || fail "$var is not set (run infra/compose/generate-secrets.sh)"
    # The values are pasted into JSON below: refuse anything that would need escaping.
    case "$val" in
        *[!A-Za-z0-9_.+/=-]*) fail "$var may only contain A-Z a-z 0-9 _ . + / = -" ;;
    esac
    [ "${#val}" -ge 16 ] || fail "$var is shorter than 16 characters"
done
[ "$S3_MLFLOW_ACCESS_KEY" != "$S3_ALIGNFLOW_ACCESS_KEY" ] || fail "the two S3 access keys must differ"

rm -f "$READY_FILE"
mkdir -p "$DATA_DIR" "$(dirname "$S3_CONFIG")"
old_umask=$(umask)
umask 077
cat > "$S3_CONFIG" <<JSON
{
  "identities": [
    {
      "name": "mlflow",
      "credentials": [{"accessKey": "$S3_MLFLOW_ACCESS_KEY", "secretKey": "$S3_MLFLOW_SECRET_KEY"}],
      "actions": ["Read:mlflow", "Write:mlflow", "List:mlflow", "Tagging:mlflow"]
    },
    {
      "name": "alignflow",
      "credentials": [{"accessKey": "$S3_ALIGNFLOW_ACCESS_KEY", "secretKey": "$S3_ALIGNFLOW_SECRET_KEY"}],
      "actions": ["Read:alignflow", "Write:alignflow", "List:alignflow", "Tagging:alignflow"]
    }
  ]
}
JSON
umask "$old_umask"
# The secrets are in the file now; the server process does not need them in its environment.
unset S3_MLFLOW_ACCESS_KEY S3_MLFLOW_SECRET_KEY S3_ALIGNFLOW_ACCESS_KEY S3_ALIGNFLOW_SECRET_KEY val

# -ip=127.0.0.1: master, volume and filer talk to each other over loopback inside the container;
# -ip.bind=0.0.0.0 lets the other containers (on the internal network) reach the S3 port.
# -volume.max=0 sizes the volume count from free disk / volume size: every bucket is a collection
# that grows several volumes, so the default fixed count (8) runs out after two or three buckets.
"$WEED" server \
    -dir="$DATA_DIR" \
    -ip=127.0.0.1 -ip.bind=0.0.0.0 \
    -master.volumeSizeLimitMB="${SEAWEED_VOLUME_SIZE_LIMIT_MB:-1024}" -volume.max=0 \
    -filer \
    -s3 -s3.port=8333 -s3.config="$S3_CONFIG" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit $?' TERM INT

# Wait for the master and filer, then create the buckets (idempotent: existing ones are kept).
i=0
until echo "s3.bucket.list" | "$WEED" shell -master=127.0.0.1:9333 >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "weed server exited during start-up"
    i=$((i + 1))
    [ "$i" -le 120 ] || fail "weed server did not answer within 120 s"
    sleep 1
done
for bucket in $BUCKETS; do
    if ! echo "s3.bucket.list" | "$WEED" shell -master=127.0.0.1:9333 2>/dev/null | grep -qw "$bucket"; then
        echo "s3.bucket.create -name $bucket" | "$WEED" shell -master=127.0.0.1:9333 >/dev/null \
            || fail "could not create bucket $bucket"
    fi
done
# The master elects itself leader and the volume server registers a few seconds after the shell
# answers; writes in that window fail with "volume N not found". Probe with a real write first.
probe="$DATA_DIR/.write-probe"
echo probe > "$probe"
i=0
until "$WEED" upload -master=127.0.0.1:9333 "$probe" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 120 ] || fail "no writable volume within 120 s"
    sleep 1
done
rm -f "$probe"
echo "s3-entrypoint: buckets ready: $BUCKETS"
touch "$READY_FILE"

wait "$pid"
