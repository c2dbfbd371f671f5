#!/usr/bin/env bash
# Installs the Debian packages that make run, make test and make bench use, where they are missing.
# Idempotent: a machine that has everything is left alone. Needs root (the appliance's CI and dev machines are).
set -euo pipefail
pkgs=(ffmpeg swtpm swtpm-tools tpm2-tools age openssl jq unzip xxd
      gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 python3-gi
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
      chromium chromium-driver testssl.sh rsyslog rsyslog-gnutls
      hostapd wpasupplicant nftables iproute2 qemu-system-x86 linux-image-amd64 busybox-static tcpdump
      rauc dbus squashfs-tools grub-common libubootenv-tool openssl nodejs
      slapd ldap-utils krb5-kdc krb5-admin-server krb5-user curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
