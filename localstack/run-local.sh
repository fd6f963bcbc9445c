#!/usr/bin/env bash
# vstream's distributed mode without Docker: LocalStack S3 (host mode), redis-server and the
# coordinator-fn, ingest and encoder binaries, each on a free loopback port, with a private
# temporary directory. Ctrl-C (or SIGTERM) stops everything it started.
#
# Usage: localstack/run-local.sh [--smoke] [--services-only] [--keep]
#   --smoke          publish 8 s of an ffmpeg test pattern to rtmp://127.0.0.1:PORT/demo/key, wait
#                    for hls/demo/<stream id>/master.m3u8 in the bucket, print PASS or FAIL, stop
#                    everything and exit 0 or 1
#   --services-only  start LocalStack and Redis only and print the settings for binaries you run
#                    yourself (cargo run --bin ...)
#   --keep           keep the temporary directory (logs, LocalStack files) after stopping
#
# Environment:
#   BIN_DIR              directory of the binaries (default: <repo>/target/release; build them with
#                        cargo build --release --workspace --bin coordinator-fn --bin ingest --bin encoder)
#   BUCKET               bucket name (default vstream)
#   SERVER_CAPACITY      streams per encoder (default 2)
#   LOCALSTACK_PYTHON    a Python >= 3.12 for LocalStack (default: searched, pyenv included)
#   STARTUP_TIMEOUT      seconds each service may take to become ready (default 60)
#   SMOKE_TIMEOUT        seconds --smoke waits for master.m3u8 after the publish starts (default 90)
#   KEY_VERIFICATION_URL, EVENT_CALLBACK_URL, ... are passed to the coordinator as they are.
# Needs: curl, python3, redis-server (apt-get install redis-server), ffmpeg (encoder, --smoke).
# LocalStack is installed on first use into ${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools/localstack.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

SMOKE=0
SERVICES_ONLY=0
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --services-only) SERVICES_ONLY=1 ;;
    --keep) KEEP=1 ;;
    -h | --help)
      sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
if [ "$SMOKE" -eq 1 ] && [ "$SERVICES_ONLY" -eq 1 ]; then
  echo "--smoke needs the binaries: it cannot be combined with --services-only" >&2
  exit 2
fi

BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
BUCKET="${BUCKET:-vstream}"
SERVER_CAPACITY="${SERVER_CAPACITY:-2}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-90}"
TOOLS="${VSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools}"
# Local only: never use this secret anywhere else.
CONTROL_SECRET_LOCAL="local-only-control-secret-$RANDOM$RANDOM"
# Pinned LocalStack host-mode install (see /work/shared/LOCAL-SERVICES.md for why each pin).
LOCALSTACK_SPEC=("localstack-core[runtime]==2026.3.0" "cbor2<6" "pyopenssl==25.3.0" "cryptography>=45.0.7,<47" "service_identity")

log() { printf '[run-local] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- prerequisites ------------------------------------------------------------------------------

for tool in curl python3 redis-server; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install -y curl python3 redis-server)"
done
if [ "$SERVICES_ONLY" -eq 0 ]; then
  command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found (apt-get install -y ffmpeg)"
  for bin in coordinator-fn ingest encoder; do
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin not found: cargo build --release --workspace --bin coordinator-fn --bin ingest --bin encoder (or set BIN_DIR)"
  done
fi

# A Python >= 3.12 for LocalStack (it fails on 3.11 with a SyntaxError).
find_localstack_python() {
  local candidates=()
  [ -n "${LOCALSTACK_PYTHON:-}" ] && candidates+=("$LOCALSTACK_PYTHON")
  candidates+=(python3.14 python3.13 python3.12 python3)
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  if [ -d "$pyenv_root/versions" ]; then
    local v
    while IFS= read -r v; do candidates+=("$v/bin/python"); done < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -name '3.1[2-9]*' | sort -rV)
  fi
  local c
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

ensure_localstack() {
  local dir="$TOOLS/localstack"
  local want="${LOCALSTACK_SPEC[*]}"
  if [ -x "$dir/bin/python" ] && [ -f "$dir/.vstream-spec" ] && [ "$(cat "$dir/.vstream-spec")" = "$want" ]; then
    return 0
  fi
  local py
  py="$(find_localstack_python)" || die "LocalStack needs Python >= 3.12 (set LOCALSTACK_PYTHON, or install python3.12 / pyenv)"
  log "installing LocalStack ($want) into $dir with $py (about 40 s, once)"
  rm -rf "$dir"
  mkdir -p "$TOOLS"
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "${LOCALSTACK_SPEC[@]}"
  echo "$want" >"$dir/.vstream-spec"
}
ensure_localstack

# --- process management -------------------------------------------------------------------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vstream-local.XXXXXX")"
mkdir -p "$WORK/logs" "$WORK/tmp" "$WORK/redis" "$WORK/encoder-tmp"
PIDS=()
NAMES=()
LAST_PID=""

# start NAME COMMAND...: runs COMMAND in the background in its own process group (so that its
# children, ffmpeg for instance, are stopped with it), output to $WORK/logs/NAME.log.
start() {
  local name="$1"
  shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
  else
    "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
  fi
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  NAMES+=("$name")
  log "started $name (pid $LAST_PID), log: $WORK/logs/$name.log"
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop_one PID NAME: SIGTERM to its process group (or the process), SIGKILL after 15 s.
stop_one() {
  local pid="$1" name="$2" target="$1" i
  alive "$pid" || return 0
  # setsid made the process a group leader: signal its whole group.
  if [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]; then target="-$pid"; fi
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name did not stop within 15 s: SIGKILL"
    kill -KILL -- "$target" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

show_log() {
  local name="$1"
  [ -s "$WORK/logs/$name.log" ] || return 0
  log "---- last lines of $name.log ----"
  tail -n 40 "$WORK/logs/$name.log" | sed 's/^/    /' >&2
}

CLEANED=0
cleanup() {
  [ "$CLEANED" -eq 1 ] && return 0
  CLEANED=1
  local i
  # Reverse order: encoder, ingest, coordinator, then Redis and LocalStack.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_one "${PIDS[$i]}" "${NAMES[$i]}"
  done
  if [ "$KEEP" -eq 1 ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'exit 143' TERM

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# wait_until NAME PID TIMEOUT COMMAND...: retries COMMAND every 0.2 s until it succeeds; fails
# when the process dies or the time is up.
wait_until() {
  local name="$1" pid="$2" timeout="$3"
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      show_log "$name"
      die "$name exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log "$name"
      die "$name not ready after ${timeout} s"
    fi
    sleep 0.2
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }
# Any HTTP answer (even 404): the server is listening.
http_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" != "000" ]; }
localstack_s3_ready() { curl -fsS --max-time 2 "$1/_localstack/health" | grep -Eq '"s3": *"(available|running)"'; }
redis_ready() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
  else
    python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),1); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' "$1"
  fi
}

# --- LocalStack S3 ------------------------------------------------------------------------------

read -r S3_PORT REDIS_PORT COORD_PORT RTMP_PORT INGEST_HTTP_PORT ENCODER_HTTP_PORT <<<"$(free_ports 6)"
S3_URL="http://127.0.0.1:$S3_PORT"

# Own temporary and state directories: LocalStack deletes its temporary directory at start and stop.
start localstack env \
  TMPDIR="$WORK/tmp" FILESYSTEM_ROOT="$WORK/localstack" LOCALSTACK_VOLUME_DIR="$WORK/localstack/volume" \
  GATEWAY_LISTEN="127.0.0.1:$S3_PORT" SERVICES=s3 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
  "$TOOLS/localstack/bin/python" -m localstack.runtime.main
LOCALSTACK_PID="$LAST_PID"
wait_until localstack "$LOCALSTACK_PID" "$STARTUP_TIMEOUT" localstack_s3_ready "$S3_URL"

# Path-style, unsigned: LocalStack accepts it (account 000000000000, us-east-1, like the
# encoder's dummy test/test credentials).
curl -fsS -o /dev/null -X PUT "$S3_URL/$BUCKET" || die "could not create bucket $BUCKET"
CORS_XML='<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>'
CORS_MD5="$(printf '%s' "$CORS_XML" | python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.md5(sys.stdin.buffer.read()).digest()).decode())')"
curl -fsS -o /dev/null -X PUT -H "Content-MD5: $CORS_MD5" -H 'Content-Type: application/xml' \
  --data-binary "$CORS_XML" "$S3_URL/$BUCKET?cors" || log "warning: could not set CORS on $BUCKET (browser playback may fail)"
log "bucket $BUCKET ready at $S3_URL/$BUCKET"

# --- Redis --------------------------------------------------------------------------------------

start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --daemonize no --dir "$WORK/redis"
wait_until redis "$LAST_PID" "$STARTUP_TIMEOUT" redis_ready "$REDIS_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
PLAYBACK_BASE_URL="$S3_URL/$BUCKET"

if [ "$SERVICES_ONLY" -eq 1 ]; then
  cat <<EOF

LocalStack S3 and Redis are running (Ctrl-C stops them). Settings for binaries you start yourself:

  export REDIS_URL=$REDIS_URL
  export CONTROL_SECRET=$CONTROL_SECRET_LOCAL
  export PUBLIC_BASE_URL=$PLAYBACK_BASE_URL
  export HLS_STORAGE_TYPE=S3 AWS_REGION=us-east-1 AWS_S3_BUCKET=$BUCKET AWS_S3_FORCE_PATH_STYLE=true
  export AWS_ENDPOINT_URL_S3=$S3_URL AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

  S3 listing:  curl '$S3_URL/$BUCKET?list-type=2'
  Logs:        $WORK/logs/
EOF
  while true; do
    for i in "${!PIDS[@]}"; do
      alive "${PIDS[$i]}" || {
        show_log "${NAMES[$i]}"
        die "${NAMES[$i]} exited"
      }
    done
    sleep 1
  done
fi

# --- coordinator-fn, ingest, encoder ------------------------------------------------------------

COORD_URL="http://127.0.0.1:$COORD_PORT"
LOG_FORMAT_LOCAL="${LOG_FORMAT:-text}"

# Outside Lambda (no AWS_LAMBDA_RUNTIME_API), coordinator-fn serves HTTP on BIND_ADDRESS:HTTP_PORT.
start coordinator env -u AWS_LAMBDA_RUNTIME_API \
  BIND_ADDRESS=127.0.0.1 HTTP_PORT="$COORD_PORT" \
  REDIS_URL="$REDIS_URL" CONTROL_SECRET="$CONTROL_SECRET_LOCAL" \
  PUBLIC_BASE_URL="$PLAYBACK_BASE_URL" LOG_FORMAT="$LOG_FORMAT_LOCAL" \
  "$BIN_DIR/coordinator-fn"
wait_until coordinator "$LAST_PID" "$STARTUP_TIMEOUT" http_answers "$COORD_URL/healthz"

# BIND_ADDRESS=127.0.0.1 is also the address the ingest gives encoders for the media pull.
start ingest env \
  BIND_ADDRESS=127.0.0.1 RTMP_PORT="$RTMP_PORT" HTTP_PORT="$INGEST_HTTP_PORT" \
  CONTROL_BASE_URL="$COORD_URL" REDIS_URL="$REDIS_URL" CONTROL_SECRET="$CONTROL_SECRET_LOCAL" \
  EXTERNAL_IP=127.0.0.1 EXTERNAL_PORT="$RTMP_PORT" EXTERNAL_SSL=false \
  LOG_FORMAT="$LOG_FORMAT_LOCAL" \
  "$BIN_DIR/ingest"
wait_until ingest "$LAST_PID" "$STARTUP_TIMEOUT" http_ok "http://127.0.0.1:$INGEST_HTTP_PORT/healthz"

start encoder env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN \
  TMPDIR="$WORK/encoder-tmp" \
  BIND_ADDRESS=127.0.0.1 HTTP_PORT="$ENCODER_HTTP_PORT" \
  CONTROL_BASE_URL="$COORD_URL" REDIS_URL="$REDIS_URL" CONTROL_SECRET="$CONTROL_SECRET_LOCAL" \
  SERVER_CAPACITY="$SERVER_CAPACITY" HLS_STORAGE_TYPE=S3 HLS_S3_PREFIX= \
  AWS_REGION=us-east-1 AWS_S3_BUCKET="$BUCKET" AWS_ENDPOINT_URL_S3="$S3_URL" AWS_S3_FORCE_PATH_STYLE=true \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  LOG_FORMAT="$LOG_FORMAT_LOCAL" \
  "$BIN_DIR/encoder"
wait_until encoder "$LAST_PID" "$STARTUP_TIMEOUT" http_ok "http://127.0.0.1:$ENCODER_HTTP_PORT/healthz"

cat <<EOF

vstream is running on 127.0.0.1 (Ctrl-C stops everything):
  RTMP          rtmp://127.0.0.1:$RTMP_PORT/<channel>/<key>
                (OBS: Server rtmp://127.0.0.1:$RTMP_PORT/<channel>, Stream Key <key>)
  WebSocket     ws://127.0.0.1:$INGEST_HTTP_PORT/<channel>/<key>/publish
  Coordinator   $COORD_URL   (commands API: $COORD_URL/commands/report)
  Playback base $PLAYBACK_BASE_URL   (<base>/hls/<channel>/<stream id>/master.m3u8)
  S3            $S3_URL (LocalStack, bucket $BUCKET)
  Redis         $REDIS_URL
  Logs          $WORK/logs/
EOF

# --- smoke test ---------------------------------------------------------------------------------

# master_key: prints the first hls/demo/<stream id>/master.m3u8 key in the bucket.
master_key() {
  curl -fsS --max-time 5 "$S3_URL/$BUCKET?list-type=2&prefix=hls/demo/" |
    grep -oE '<Key>hls/demo/[^/<]+/master\.m3u8</Key>' | head -n 1 | sed -e 's/<Key>//' -e 's/<\/Key>//'
}

if [ "$SMOKE" -eq 1 ]; then
  log "smoke: publishing 8 s of a test pattern to rtmp://127.0.0.1:$RTMP_PORT/demo/key"
  start ffmpeg ffmpeg -hide_banner -loglevel warning -nostdin -re \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 8 -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 60 \
    -c:a aac -b:a 128k -f flv "rtmp://127.0.0.1:$RTMP_PORT/demo/key"
  FFMPEG_PID="$LAST_PID"
  deadline=$((SECONDS + SMOKE_TIMEOUT))
  found=""
  ffmpeg_rc=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    found="$(master_key || true)"
    [ -n "$found" ] && break
    if [ -z "$ffmpeg_rc" ] && ! alive "$FFMPEG_PID"; then
      ffmpeg_rc=0
      wait "$FFMPEG_PID" || ffmpeg_rc=$?
      if [ "$ffmpeg_rc" -ne 0 ]; then
        log "ffmpeg exited with status $ffmpeg_rc: the publish failed or was refused"
        break
      fi
      log "ffmpeg finished publishing; waiting for the playlists"
    fi
    for i in "${!PIDS[@]}"; do
      if [ "${PIDS[$i]}" != "$FFMPEG_PID" ] && ! alive "${PIDS[$i]}"; then
        show_log "${NAMES[$i]}"
        log "${NAMES[$i]} exited during the smoke test"
        break 2
      fi
    done
    sleep 1
  done
  if [ -n "$found" ]; then
    echo "PASS: $found is in the bucket ($PLAYBACK_BASE_URL/$found)"
    exit 0
  fi
  for name in ffmpeg coordinator ingest encoder; do show_log "$name"; done
  if [ -n "$ffmpeg_rc" ] && [ "$ffmpeg_rc" -ne 0 ]; then
    echo "FAIL: the test publish to rtmp://127.0.0.1:$RTMP_PORT/demo/key failed (ffmpeg status $ffmpeg_rc)"
  else
    echo "FAIL: no hls/demo/<stream id>/master.m3u8 in bucket $BUCKET after ${SMOKE_TIMEOUT} s"
  fi
  exit 1
fi

while true; do
  for i in "${!PIDS[@]}"; do
    if ! alive "${PIDS[$i]}"; then
      show_log "${NAMES[$i]}"
      die "${NAMES[$i]} exited"
    fi
  done
  sleep 1
done
