#!/usr/bin/env bash
# Installs Debian's `chromium` for the browser tests (tests/integration/test_browser.py drives it through
# Playwright with executable_path=/usr/bin/chromium; `playwright install` is never run: it downloads browsers).
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (or passwordless sudo).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null | head -n1 || echo chromium) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: /usr/bin/chromium is missing and this user is not root (and has no passwordless sudo);" \
             "run as root: apt-get update && apt-get install -y chromium" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not found; install Debian's chromium package so that /usr/bin/chromium exists" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq; then
    echo "install-browser: apt-get update failed (is a Debian package mirror reachable?)" >&2
    exit 1
fi
if ! $SUDO apt-get install -y -qq chromium; then
    echo "install-browser: apt-get install chromium failed" >&2
    exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: chromium was installed but /usr/bin/chromium is missing" >&2
    exit 1
fi
echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null | head -n1)"
