#!/usr/bin/env bash
# Prepares make image-test: a test release (TUF keys and repository, RAUC bundle certificate) under
# build/imagetest/release, and three builds of the recipe, each reused while its inputs are unchanged:
#   build/imagetest/a      disk image, firmware 1.0.0, trusting the test release
#   build/imagetest/bad    root file system 1.1.0 whose nvrd exits before READY (testdata/bad-nvrd)
#   build/imagetest/good   root file system 1.2.0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
t="$top/build/imagetest"
rel="$t/release"
nvr="$top/bin/nvr"
if [ ! -s "$rel/keys/bundle.cert.pem" ] || [ ! -s "$rel/repository/metadata/1.root.json" ]; then
  rm -rf "$rel"
  "$nvr" release init -dir "$rel" >/dev/null
  "$nvr" release cert -dir "$rel" >/dev/null
fi
export NVR_KEYRING="$rel/keys/bundle.cert.pem" NVR_TUF_ROOT="$rel/repository/metadata/1.root.json"
NVR_VERSION=1.0.0 "$here/build.sh" amd64 "$t/a" >/dev/null
NVR_VERSION=1.1.0 NVR_ROOTFS_ONLY=1 NVR_OVERLAY="$here/testdata/bad-nvrd" "$here/build.sh" amd64 "$t/bad"
NVR_VERSION=1.2.0 NVR_ROOTFS_ONLY=1 "$here/build.sh" amd64 "$t/good"
ls -l "$t/a/rootfs-amd64.squashfs" "$t/a/disk-amd64.img" "$t/bad/rootfs-amd64.squashfs" "$t/good/rootfs-amd64.squashfs"
