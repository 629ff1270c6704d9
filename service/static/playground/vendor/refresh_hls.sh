#!/usr/bin/env bash
# Re-vendor hls.js (the HLS player the playground uses where the browser has no native HLS) from npm.
# Usage: service/static/playground/vendor/refresh_hls.sh [VERSION]   (default: the pinned one below)
# Bump HLS_VERSION here, run the script, commit hls.min.js, HLS_LICENSE and VERSIONS together.
set -euo pipefail
HLS_VERSION=${1:-1.6.19}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "hls.js@${HLS_VERSION}" >/dev/null
tar -xzf "hls.js-${HLS_VERSION}.tgz"
cp package/dist/hls.min.js "$HERE/hls.min.js"
cp package/LICENSE "$HERE/HLS_LICENSE"
SHA=$(sha256sum "$HERE/hls.min.js" | cut -d' ' -f1)
cat >"$HERE/VERSIONS" <<EOF
# Third-party files vendored here (served by the API at /playground/vendor/; never fetched from a CDN).
# name      version  license                   source                           sha256 of the file
hls.min.js  ${HLS_VERSION}  Apache-2.0 (HLS_LICENSE)  npm hls.js@${HLS_VERSION} dist/hls.min.js  ${SHA}
EOF
echo "vendored hls.js ${HLS_VERSION} (sha256 ${SHA})"
