#!/usr/bin/env bash
# Build shoal-base:bookworm, a Debian bookworm root with Python 3.11 and its venv module,
# from Debian packages alone (mmdebstrap): the base of the Shoal image where no container
# registry is reachable. Idempotent: an existing image is kept.
set -euo pipefail
TAG="${SHOAL_BASE_TAG:-shoal-base:bookworm}"
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base $TAG present"
    exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v mmdebstrap >/dev/null \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
as_root mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$OUT/rootfs.tar"
docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$OUT/rootfs.tar" "$TAG" >/dev/null
echo "built $TAG"
