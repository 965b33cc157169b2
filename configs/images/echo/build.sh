#!/usr/bin/env bash
# Build shoal-test/echo:v1 and :v2 from Debian's busybox-static, FROM scratch.
# Idempotent and quick: the rootfs is assembled in a temp dir, the legacy builder caches layers.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="${ECHO_IMAGE_REPO:-shoal-test/echo}"

if [ ! -x /bin/busybox ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends busybox-static >/dev/null
    else
        sudo apt-get install -y --no-install-recommends busybox-static >/dev/null
    fi
fi

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
cp -a "$HERE/rootfs" "$CTX/rootfs"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
mkdir -p "$CTX/rootfs/bin" "$CTX/rootfs/tmp" "$CTX/rootfs/etc"
chmod 1777 "$CTX/rootfs/tmp"
chmod 0777 "$CTX/rootfs/www"  # writable for any --user
cp /bin/busybox "$CTX/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$CTX/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$CTX/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$CTX/rootfs/etc/group"
# Stable mtimes keep the build cache valid across runs.
find "$CTX/rootfs" -exec touch -h -d '2020-01-01 00:00:00' {} +

for version in v1 v2; do
    DOCKER_BUILDKIT=0 docker build -q --build-arg "VERSION=$version" -t "$REPO:$version" "$CTX" 2>&1 >/dev/null \
        | { grep -v -e "legacy builder is deprecated" -e "BuildKit is currently disabled" -e "environment-variable" -e "^$" >&2 || true; }
    echo "built $REPO:$version"
done
