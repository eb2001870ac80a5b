#!/usr/bin/env bash
# Mesa's EGL, which MuJoCo renders test videos through on a machine without a display (MUJOCO_GL=egl, set
# by launch.py). `make test` runs this: as root it installs Debian's packages when the library is missing;
# otherwise it says what to install (test mode then warns once and writes no MuJoCo video).
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so.0' && ldconfig -p | grep -q 'libEGL.so.1'; then
  exit 0
fi
PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Mesa's EGL for MuJoCo videos: $PACKAGES"
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null \
    || echo "warning: could not install $PACKAGES; the MuJoCo video test will fail" >&2
else
  echo "note: no Mesa EGL library; MuJoCo test videos need it (Debian: sudo apt-get install $PACKAGES)" >&2
fi
