#!/usr/bin/env bash
# Generates the test clips that cmd/camsim streams, into OUTDIR (default build/clips).
# Each clip is 10 s of testsrc2 at 25 fps with a burnt-in frame counter, GOP 25 (1 s),
# no B-frames, parameter sets repeated before every IDR. Existing clips are left alone.
# Each clip is written to a temporary name and renamed, so an interrupted run leaves no
# truncated clip behind.
set -euo pipefail

out=${1:-build/clips}
mkdir -p "$out"

# make NAME SIZE CODEC-ARGS...
make_clip() {
  local name=$1 size=$2
  shift 2
  local dst="$out/$name"
  if [ -s "$dst" ]; then
    return 0
  fi
  local tmp fmt
  case $name in
    *.h264) fmt=h264 ;;
    *.h265) fmt=hevc ;;
    *) echo "clips: unknown extension: $name" >&2; return 1 ;;
  esac
  tmp=$(mktemp "$out/.tmp.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -f '$tmp'" EXIT
  ffmpeg -nostdin -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=${size}:rate=25:duration=10" \
    -vf "drawtext=text='%{n}':x=20:y=20:fontsize=64:fontcolor=white:box=1:boxcolor=black" \
    -pix_fmt yuv420p -an "$@" -f "$fmt" "$tmp" 2>/dev/null ||
  ffmpeg -nostdin -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=${size}:rate=25:duration=10" \
    -pix_fmt yuv420p -an "$@" -f "$fmt" "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$dst"
  trap - EXIT
  echo "clips: wrote $dst"
}

x264=(-c:v libx264 -preset ultrafast -profile:v main -bf 0 -g 25 -keyint_min 25 -sc_threshold 0
      -b:v 4M -maxrate 4M -bufsize 4M -x264-params repeat-headers=1:scenecut=0)
x265=(-c:v libx265 -preset ultrafast -bf 0 -g 25 -keyint_min 25 -b:v 4M
      -x265-params repeat-headers=1:bframes=0:keyint=25:min-keyint=25:scenecut=0:log-level=error)

make_clip h264-1080p.h264 1920x1080 "${x264[@]}"
make_clip h264-720p.h264 1280x720 "${x264[@]}"
make_clip h265-1080p.h265 1920x1080 "${x265[@]}"
make_clip h265-720p.h265 1280x720 "${x265[@]}"
