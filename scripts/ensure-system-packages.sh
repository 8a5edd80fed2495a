#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real when they are missing:
# PostgreSQL (the scale-out backend's tests start a server from its binaries), Chromium
# (the console's browser tests), ffmpeg (which makes the MP4 the video preview test plays),
# and podman, runc and mmdebstrap (the container image is built from a local Debian base and
# run by the tests). Needs root, or sudo without a password.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
command -v chromium > /dev/null || missing+=(chromium)
command -v ffmpeg > /dev/null || missing+=(ffmpeg)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# podman with its recommended helpers, as measured to work on these machines (see Containerfile).
containers=()
for tool in podman runc mmdebstrap; do
    command -v "$tool" > /dev/null || containers+=("$tool")
done

if [ ${#missing[@]} -eq 0 ] && [ ${#containers[@]} -eq 0 ]; then
    exit 0
fi

echo "Installing Debian packages the tests need: ${missing[*]} ${containers[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo > /dev/null; then
    SUDO="sudo -n"
else
    echo "error: need root to install ${missing[*]} ${containers[*]} (apt-get install ...)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
if [ ${#containers[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq "${containers[@]}" > /dev/null
fi
