#!/usr/bin/env bash
# What `bench latency` needs besides the Rust build, installed the way scripts/test installs it
# (so either reuses the other's work): ffmpeg, Chromium, node/npm (apt), hls.js and
# playwright-core (`npm ci --prefix web`), and LocalStack in a virtualenv at
# ${VSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools}/localstack, pinned by
# LOCALSTACK_SPEC in scripts/test. Usage: bench/assets/latency-setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== npm ci --prefix web"
npm ci --prefix web --no-audit --no-fund --loglevel=error

# The LocalStack pins of scripts/test, one definition.
eval "$(grep '^LOCALSTACK_SPEC=' scripts/test)"
TOOLS="${VSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vstream-tools}"
dir="$TOOLS/localstack"
want="${LOCALSTACK_SPEC[*]}"
if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.vstream-spec" 2>/dev/null)" = "$want" ]; then
  echo "== LocalStack already in $dir"
  exit 0
fi
py=""
candidates=("${VSTREAM_PYTHON:-}" python3.14 python3.13 python3.12 python3)
for v in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/; do
  [ -d "$v" ] && candidates+=("${v%/}/bin/python")
done
for c in "${candidates[@]}"; do
  [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 || continue
  if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
    py="$(command -v "$c")"
    break
  fi
done
if [ -z "$py" ]; then
  echo "LocalStack needs Python >= 3.12 (none found; set VSTREAM_PYTHON)" >&2
  exit 1
fi
echo "== installing $want into $dir (with $py)"
rm -rf "$dir"
mkdir -p "$TOOLS"
"$py" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "${LOCALSTACK_SPEC[@]}"
echo "$want" >"$dir/.vstream-spec"
