#!/bin/sh
# Install Debian's headless-capable Chromium, used by tests/test_reports.py to check that the
# HTML reports render. Skips when it is already installed; needs root (CI containers run as
# root; on a workstation run it with sudo).
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium.sh: must run as root (apt-get); try: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
