#!/bin/sh
# Install the benchmark's external tools when missing (wrk, from Debian's packages).
# `make bench` calls this first; it needs root (or sudo) only when something is missing.
set -eu
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
echo "bench: installing wrk (Debian package 'wrk')" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "bench: wrk is missing and this user cannot install it; run: apt-get install -y wrk" >&2
    exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk
