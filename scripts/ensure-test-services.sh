#!/usr/bin/env bash
# Starts or installs what the test suite needs: PostgreSQL, Debian's Chromium, the npm SDKs.
# With CI=true a service that cannot be provided fails the run instead of letting tests skip.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
fail() { echo "ensure-test-services: $*" >&2; status=1; }

# PostgreSQL on 127.0.0.1:5432
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || fail "PostgreSQL is not reachable on 127.0.0.1:5432"
fi

# Debian's Chromium for the browser SDK and UI tests
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
      || fail "could not install Debian's chromium"
  else
    fail "chromium is missing and cannot be installed here (need root and apt-get)"
  fi
fi

# npm packages for the JavaScript SDK tests
if [ -f tests/js/package.json ]; then
  if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in tests/js failed"
  fi
fi

if [ "$status" != 0 ] && [ "${CI:-}" != "true" ]; then
  echo "ensure-test-services: continuing; tests that need the missing service will fail or skip" >&2
  exit 0
fi
exit "$status"
