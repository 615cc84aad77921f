#!/usr/bin/env bash
# Installs what tests/test_sdk_segment_posthog*.py need beyond the Python packages: the Node SDKs
# pinned in tests/clients/sdks/package.json (into .sluice/sdks/node, git-ignored; a no-op when
# done), and Chromium from Debian for posthog-js when no /usr/bin/chromium is there. Run by `make sdks`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/tests/clients/sdks"
out="$root/.sluice/sdks/node"
if command -v npm >/dev/null; then
  if ! cmp -s "$here/package.json" "$out/package.json" || [ ! -e "$out/.complete" ]; then
    rm -rf "$out" && mkdir -p "$out" && cp "$here/package.json" "$out/"
    npm install --prefix "$out" --no-audit --no-fund --loglevel=error
    touch "$out/.complete"
  fi
else
  echo "npm not found: the Node and browser SDK tests will be skipped" >&2
fi
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }) >/dev/null
  else
    echo "no /usr/bin/chromium and no way to install it: the browser SDK test will be skipped" >&2
  fi
fi
