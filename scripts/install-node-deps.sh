#!/usr/bin/env bash
# Install the pinned deploy tooling (osls and its plugins, package-lock.json) into node_modules/.
# Idempotent: runs `npm ci` only when node_modules is missing or was installed from another
# lock file; otherwise it does nothing. Needs Node.js >= 20.19 and npm (the npm registry).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-deps: npm not found; install Node.js 20 (deploy checks need it)" >&2
    exit 1
fi

stamp=node_modules/.dataharvest-lock.sha256
wanted="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -x node_modules/.bin/osls && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    exit 0
fi

echo "install-node-deps: npm ci (package-lock.json changed or node_modules missing)"
npm ci --no-audit --no-fund --loglevel=error
echo "$wanted" > "$stamp"
