#!/usr/bin/env bash
# Installs a pinned Node 24 and a pinned openclaw into the project's ignored cache, once.
#
#   scripts/ensure-openclaw.sh        -> prints NODE=<path> and ENTRY=<path> on stdout
#
# Node comes from npm itself (package node-linux-<arch>), so the machine needs only some npm.
# Each component is installed into a temporary directory, checked, marked, and renamed into
# place, so an interrupted run never leaves a half-installed tree that looks complete.
# The cache directory is .cache/openclaw/ (ignored by git); override it with DASH_OPENCLAW_CACHE.
set -euo pipefail

NODE_VERSION=24.21.0
OPENCLAW_VERSION=2026.9.6
MARKER=.dash-installed

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DASH_OPENCLAW_CACHE:-$ROOT/.cache/openclaw}"
[[ "$CACHE" == /* ]] || CACHE="$PWD/$CACHE" # printed paths must work from any directory

die() {
    echo "ensure-openclaw: ERROR: $*" >&2
    exit 1
}
say() { echo "ensure-openclaw: $*" >&2; }

case "$(uname -m)" in
    x86_64 | amd64) ARCH=x64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) die "unsupported machine architecture '$(uname -m)' (need x86_64 or aarch64)" ;;
esac

NODE_PKG="node-linux-$ARCH"
NODE_DIR="$CACHE/node-$NODE_VERSION-$ARCH"
OC_DIR="$CACHE/openclaw-$OPENCLAW_VERSION"
NODE="$NODE_DIR/node_modules/$NODE_PKG/bin/node"
ENTRY="$OC_DIR/node_modules/openclaw/openclaw.mjs"

report() {
    echo "NODE=$NODE"
    echo "ENTRY=$ENTRY"
}

# Fast path: both markers present means both trees were completely installed and checked.
if [[ -f "$NODE_DIR/$MARKER" && -f "$OC_DIR/$MARKER" && -x "$NODE" && -f "$ENTRY" ]]; then
    report
exit 0
    exit 0
fi

command -v npm >/dev/null 2>&1 ||
    die "npm was not found on PATH. Install Node.js with npm (any version) so this script can fetch Node $NODE_VERSION and openclaw@$OPENCLAW_VERSION."

mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"
# Serialise concurrent runs (two `make` or pytest processes on a fresh machine).
exec 9>"$CACHE/.lock"
flock 9
rm -rf "$CACHE"/.tmp.* # left by an interrupted run; we hold the lock, so nobody is using them

TMP=""
cleanup() {
    if [[ -n "$TMP" && -d "$TMP" ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT

# install_into FINAL_DIR DESCRIPTION CHECK_FUNCTION INSTALL_FUNCTION
install_into() {
    local final="$1" what="$2" check="$3" install="$4" started
    if [[ -f "$final/$MARKER" ]]; then
        return 0
    fi
    started=$(date +%s)
    say "installing $what into $final (first run only)"
    TMP="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
    chmod 755 "$TMP"
    "$install" "$TMP" || die "npm install of $what failed (see npm output above)"
    "$check" "$TMP" || die "$what was installed but does not work (see output above)"
    echo "$what" >"$TMP/$MARKER"
    rm -rf "$final"
    mv "$TMP" "$final" || die "cannot move $TMP to $final"
    TMP=""
    say "installed $what in $(($(date +%s) - started)) s"
}

install_node() {
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$1" "$NODE_PKG@$NODE_VERSION" >&2
}
check_node() {
    local got
    got="$("$1/node_modules/$NODE_PKG/bin/node" --version)" || return 1
    [[ "$got" == "v$NODE_VERSION" ]] || {
        echo "expected node v$NODE_VERSION, got $got" >&2
        return 1
    }
}

install_openclaw() {
    PATH="$(dirname "$NODE"):$PATH" npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
        --prefix "$1" "openclaw@$OPENCLAW_VERSION" >&2
}
check_openclaw() {
    local got
    got="$(env -i PATH="$(dirname "$NODE"):/usr/bin:/bin" HOME="$1" OPENCLAW_NO_AUTO_UPDATE=1 \
        "$NODE" "$1/node_modules/openclaw/openclaw.mjs" --version 2>&1)" || {
        echo "$got" >&2
        return 1
    }
    [[ "$got" == *"$OPENCLAW_VERSION"* ]] || {
        echo "expected openclaw $OPENCLAW_VERSION, got: $got" >&2
        return 1
    }
}

install_into "$NODE_DIR" "$NODE_PKG@$NODE_VERSION" check_node install_node
install_into "$OC_DIR" "openclaw@$OPENCLAW_VERSION" check_openclaw install_openclaw
report
exit 0
