#!/usr/bin/env bash
# Debian's chromium for the console's browser tests (Playwright drives it via executable_path;
# no browser download from Playwright's CDN). Idempotent: nothing to do when `chromium` is on
# PATH. Installing needs root (apt-get); otherwise it says what to run and fails.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-chromium: chromium not found; run as root: apt-get update && apt-get install -y chromium" >&2
    exit 1
fi
echo "install-chromium: apt-get install chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
