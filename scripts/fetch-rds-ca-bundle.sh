#!/usr/bin/env bash
# Put AWS's RDS CA bundle (a public PEM of every region's root CAs) into the package, where
# dataharvest.security.connection looks for it. Run once before `osls package` / deploy, on a
# machine that reaches AWS's trust store (docs/DEPLOY.md, "TLS to the database").
set -euo pipefail
target="$(dirname "$0")/../shared/dataharvest/security/certs/rds-global-bundle.pem"
url="${RDS_CA_BUNDLE_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}"
tmp="$(mktemp)"
curl --fail --silent --show-error --location "$url" -o "$tmp"
grep -q "BEGIN CERTIFICATE" "$tmp" || { echo "not a PEM bundle: $url" >&2; exit 1; }
mv "$tmp" "$target"
echo "RDS CA bundle: $target ($(grep -c 'BEGIN CERTIFICATE' "$target") certificates)"
