#!/usr/bin/env bash
# Debian's Chromium + ChromeDriver for the docs browser test (tests/test_docs.py). Idempotent: does nothing
# when both are there. Needs root (or sudo); CI machines are fresh, so the test command calls this.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian's chromium + chromium-driver for the docs browser test ..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version 2>/dev/null | head -1 || true
