#!/usr/bin/env bash
# Fetches the ClickHouse clients that tests/test_warehouse_clients.py runs against `sluice warehouse`:
# the Node client (npm, pinned in tests/clients/package.json) and the JDBC driver (Maven, pinned in
# tests/clients/pom.xml), into .sluice/clients/ (git-ignored). Run by `make clients`; a no-op when done.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/.sluice/clients"
here="$root/tests/clients"
mkdir -p "$out"
if command -v npm >/dev/null; then
  if ! cmp -s "$here/package.json" "$out/node/package.json" || [ ! -e "$out/node/.complete" ]; then
    rm -rf "$out/node" && mkdir -p "$out/node" && cp "$here/package.json" "$out/node/"
    npm install --prefix "$out/node" --no-audit --no-fund --loglevel=error
    touch "$out/node/.complete"
  fi
else
  echo "npm not found: the Node client's tests will be skipped" >&2
fi
if command -v mvn >/dev/null; then
  if ! cmp -s "$here/pom.xml" "$out/jdbc.pom.xml" || [ ! -e "$out/jdbc/.complete" ]; then
    rm -rf "$out/jdbc"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$out/jdbc" -DincludeScope=runtime
    cp "$here/pom.xml" "$out/jdbc.pom.xml"
    touch "$out/jdbc/.complete"
  fi
else
  echo "mvn not found: the JDBC driver's tests will be skipped" >&2
fi
