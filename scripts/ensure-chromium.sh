#!/usr/bin/env bash
# Make sure Debian's Chromium is present for the end-to-end tests; install it when we are root.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the end-to-end tests ..."
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) >/tmp/lesion-review-chromium-install.log 2>&1; then
    echo "chromium installed."
    exit 0
  fi
  echo "chromium install failed; see /tmp/lesion-review-chromium-install.log"
fi
echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
echo "!! Chromium (/usr/bin/chromium) is missing: the browser tests will be SKIPPED."
echo "!! Install it with: sudo apt-get install chromium"
echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
exit 0
