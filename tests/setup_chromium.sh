#!/bin/sh
# Installs headless Chromium for tests/test_introspect_visualize.py (Debian/Ubuntu).
# Idempotent: does nothing when a chromium binary is already on PATH.
# Usage: sh tests/setup_chromium.sh      (as root, or with sudo available)
set -eu
for bin in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "setup_chromium: $bin already installed ($(command -v "$bin"))"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_chromium: no apt-get here; install Chromium by hand (the visualize test skips without it)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "setup_chromium: installed $(command -v chromium)"
