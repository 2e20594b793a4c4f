#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian (bookworm) machine: system packages, TimescaleDB
# built from Debian's source package (Apache-only), and the project's virtual environment.
# A second run checks each step and skips what is already done, so it takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VV_VENV:-$ROOT/.venv}"
PG_MAJOR=15
PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
CACHE="${VV_SETUP_CACHE:-$ROOT/.cache/setup}"
PY="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nsetup failed: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; fi
fi

# 1. Debian packages -------------------------------------------------------------------
APT_PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
  mosquitto mosquitto-clients build-essential cmake dpkg-dev libkrb5-dev python3-venv git
  # the web view's end-to-end tests (headless Chromium)
  chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The web view's browser packages come through npm: Debian's nodejs and npm, unless a node
# with its npm is on the machine already (NodeSource's nodejs bundles npm and conflicts
# with Debian's npm package).
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq || fail "apt-get update failed; check the network to Debian's mirrors"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || fail "apt-get install ${missing[*]} failed; run it by hand to see why"
  # Debian starts a system-wide mosquitto on port 1883 and a PostgreSQL cluster on 5432;
  # the hub runs its own instances, so leave those alone but never depend on them.
fi

# 2. TimescaleDB from Debian trixie's source package (not packaged for bookworm) ---------
PKGLIBDIR="$("$PG_CONFIG" --pkglibdir)"
SHAREDIR="$("$PG_CONFIG" --sharedir)"
if ls "$PKGLIBDIR"/timescaledb*.so >/dev/null 2>&1 && [ -f "$SHAREDIR/extension/timescaledb.control" ]; then
  echo "TimescaleDB already installed in PostgreSQL $PG_MAJOR"
else
  step "building TimescaleDB (Apache-only) from Debian's source package"
  APTDIR="$CACHE/apt"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/src"
  # A private apt configuration: the system's own sources are never touched.
  uris="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1 || true)"
  keyring="$(sed -n 's/^Signed-By: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1 || true)"
  uris="${uris:-http://deb.debian.org/debian}"
  keyring="${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}"
  cat >"$APTDIR/trixie-src.sources" <<SRC
Types: deb-src
URIs: $uris
Suites: trixie
Components: main
Signed-By: $keyring
SRC
  APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APTDIR"
    -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache")
  if ! ls "$APTDIR"/src/timescaledb_*.dsc >/dev/null 2>&1; then
    apt-get "${APT_OPTS[@]}" update -qq || fail "could not read Debian trixie's source index (private apt config in $APTDIR)"
    (cd "$APTDIR/src" && apt-get "${APT_OPTS[@]}" source --download-only timescaledb) \
      || fail "apt-get source timescaledb failed; is Debian's mirror reachable?"
  fi
  dsc="$(ls "$APTDIR"/src/timescaledb_*.dsc | head -1)"
  BUILD="$CACHE/timescaledb-build"
  rm -rf "$BUILD"
  dpkg-source --no-check -x "$dsc" "$BUILD" >/dev/null || fail "dpkg-source -x $dsc failed"
  (
    cd "$BUILD"
    PG_CONFIG="$PG_CONFIG" ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF -DUSE_TELEMETRY=OFF \
      -DSEND_TELEMETRY_DEFAULT=OFF -DPG_CONFIG="$PG_CONFIG" >build.log 2>&1
    make -C build -j"$(nproc)" >>build.log 2>&1
    $SUDO make -C build install >>build.log 2>&1
  ) || fail "TimescaleDB build failed; see $BUILD/build.log"
  echo "TimescaleDB installed into $PKGLIBDIR"
fi

# 3. Python virtual environment with the project --------------------------------------
STAMP="$VENV/.vv-installed"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PY" -m venv "$VENV" || fail "python3 -m venv failed; install python3-venv"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  step "installing the project into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip || fail "pip upgrade failed; is PyPI reachable?"
  "$VENV/bin/pip" install -q -e "$ROOT[gateway,server,sim,dev]" \
    || fail "pip install of the project failed; see the message above"
  touch "$STAMP"
else
  echo "virtual environment up to date"
fi
# 4. The web view's browser packages, from the npm registry through the lock file ------------
WEB="$ROOT/api/web"
if [ ! -f "$WEB/node_modules/.package-lock.json" ] || [ "$WEB/package-lock.json" -nt "$WEB/node_modules/.package-lock.json" ]; then
  step "installing the web view's packages (npm ci in api/web)"
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error) \
    || fail "npm ci in $WEB failed; is the npm registry reachable?"
else
  echo "web packages up to date"
fi
echo "set-up complete"
