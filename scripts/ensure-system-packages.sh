#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real when they are missing:
# PostgreSQL (the scale-out backend's tests start a server from its binaries), Chromium
# (the console's browser tests) and ffmpeg (which makes the MP4 the video preview test
# plays). Needs root, or sudo without a password.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
command -v chromium > /dev/null || missing+=(chromium)
command -v ffmpeg > /dev/null || missing+=(ffmpeg)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "Installing Debian packages the tests need: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo > /dev/null; then
    SUDO="sudo -n"
else
    echo "error: need root to install ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
