#!/usr/bin/env bash
# Make `promtool` available to the tests (tests/otel run `promtool check rules` and
# `promtool test rules` on otel/prometheus/): PATH first, then Debian's `prometheus` package when we
# are root and have apt-get. There is no download fallback (nothing but the package registries is
# reachable), so this fails loudly: the alert-rule tests must not be skipped.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus) with apt-get" >&2
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    if command -v promtool >/dev/null 2>&1; then
      # the package also starts a Prometheus server on :9090; the tests only need promtool
      if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl stop prometheus >/dev/null 2>&1 || true
      fi
      exit 0
    fi
  fi
fi
echo "error: promtool not found and it could not be installed." >&2
echo "install Debian's 'prometheus' package (apt-get install prometheus, as root), or put promtool on PATH" >&2
exit 1
