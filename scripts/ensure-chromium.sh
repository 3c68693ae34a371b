#!/usr/bin/env bash
# Make a headless Chromium available to the browser end-to-end tests (tests/web/): PATH first
# (/usr/bin/chromium), then Debian's package when we are root and have apt-get. Fails loudly
# otherwise: the browser tests must not be skipped. Playwright drives this system Chromium
# (executable_path); `playwright install` is never run.
set -euo pipefail
for candidate in /usr/bin/chromium "$(command -v chromium 2>/dev/null || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: installing chromium with apt-get (first run only)" >&2
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    if [ -x /usr/bin/chromium ]; then
      /usr/bin/chromium --version >&2 || true
      exit 0
    fi
  fi
  echo "ensure-chromium: ERROR: apt-get install chromium failed" >&2
  exit 1
fi
echo "ensure-chromium: ERROR: no chromium at /usr/bin/chromium and cannot install it" \
  "(need root and apt-get; on Debian/Ubuntu run: sudo apt-get install -y chromium)" >&2
exit 1
