#!/usr/bin/env bash
# Installs what building and testing Lectern needs on Debian 12 (bookworm), as root. Idempotent:
# packages already present are not fetched again, so the test and demo commands can both call it.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config ca-certificates curl openssl   # openssl: the TLS test's server and certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  gstreamer1.0-alsa libasound2-dev libasound2-plugins alsa-utils
  ffmpeg python3 python3-pip python3-venv
  fuse3
  qemu-system-x86 busybox-static dmsetup e2fsprogs
  systemd dbus polkitd jq v4l-utils      # the systemd guest boots this root (hil-tests/guest, docs/systemd.md)
  device-tree-compiler
  chromium chromium-driver               # the status page test drives headless Chromium over WebDriver (hil-tests/src/browser.rs)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    # Debian 12's packaged Rust (1.63) is too old for the workspace's rust-version.
    echo "install-deps: installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# cargo-deb builds the .deb for Raspberry Pi OS (docs/deb.md, docs/decisions.md); the .deb test
# (hil-tests/tests/deb.rs) runs it. Pinned; about 4 minutes to build once, skipped when present.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "^cargo-deb $CARGO_DEB_VERSION\$"; then
  echo "install-deps: installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# oelint-adv lints the Yocto layer's recipes (hil-tests/tests/yocto.rs). Pinned with its parser
# and data, in a virtualenv of its own (Debian 12's pip refuses system-wide installs); the test
# finds it there. A few seconds, skipped when the pinned version is present.
OELINT_VERSION=9.11.2
OELINT_VENV=/opt/lectern-tools/oelint
if [ "$("$OELINT_VENV/bin/oelint-adv" --version 2>/dev/null)" != "oelint-adv $OELINT_VERSION" ]; then
  echo "install-deps: installing oelint-adv $OELINT_VERSION into $OELINT_VENV"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO python3 -m venv "$OELINT_VENV"
  $SUDO "$OELINT_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "oelint-adv==$OELINT_VERSION" "oelint-parser==8.13.2" "oelint-data==1.5.26"
fi
