#!/usr/bin/env bash
# Build the kvbox image with podman: `scripts/image.sh [TAG]` (default kvbox:VERSION).
#
# The build needs no container registry and no network: by default the base is a Debian
# bookworm root filesystem made with mmdebstrap (cached in build/image-cache) and imported
# as localhost/kvbox-base:bookworm, and every wheel (kvbox's and its dependencies', for the
# base's Python) is made or downloaded on this host into build/image/wheels. BASE=IMAGE
# picks another base that has python3 and useradd (it must be in local storage already).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/kvbox/__init__.py)
TAG=${1:-kvbox:$VERSION}
LOCAL_BASE=localhost/kvbox-base:bookworm
BASE=${BASE:-$LOCAL_BASE}
CACHE=build/image-cache
WHEELS=build/image/wheels
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}

for tool in podman runc mmdebstrap; do
    command -v "$tool" > /dev/null || { echo "error: $tool is missing (scripts/ensure-system-packages.sh installs it)" >&2; exit 1; }
done

if [ "$BASE" = "$LOCAL_BASE" ] && ! podman image exists "$LOCAL_BASE"; then
    if [ ! -f "$CACHE/base-bookworm.tar" ] || [ ! -s "$CACHE/base-bookworm.tar" ]; then
        rm -rf "$CACHE/base-bookworm.tar" "$CACHE/base-bookworm.tar.partial"
        mkdir -p "$CACHE"
        sources=/etc/apt/sources.list.d/debian.sources
        [ -e "$sources" ] || sources=/etc/apt/sources.list
        echo "image: making the Debian base with mmdebstrap (once; cached in $CACHE)" >&2
        mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$CACHE/base-bookworm.tar.partial" "$sources"
        # The name does not end in .tar: --format keeps mmdebstrap from writing a directory.
        mv "$CACHE/base-bookworm.tar.partial" "$CACHE/base-bookworm.tar"
    fi
    podman import --quiet "$CACHE/base-bookworm.tar" "$LOCAL_BASE" > /dev/null
fi

# Wheels for the base's Python and platform.
PYVER=$(podman run --rm --network=none --pull=never "$BASE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ARCH=$(uname -m)
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" .
WHEEL=$(ls "$WHEELS"/kvbox-*.whl)
platforms=()
for glibc in 2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2_12 2_5; do platforms+=(--platform "manylinux_${glibc}_$ARCH"); done
platforms+=(--platform "manylinux2014_$ARCH" --platform "manylinux2010_$ARCH" --platform "manylinux1_$ARCH")
"$PYTHON" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${platforms[@]}" "$WHEEL[postgres]"

podman build --quiet --format docker --network=none --pull=never --file Containerfile \
    --build-arg "BASE=$BASE" --build-arg "PIP_OPTIONS=--no-index" --tag "$TAG" . > /dev/null
echo "$TAG"
