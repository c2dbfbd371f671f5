#!/usr/bin/env bash
# make run: a demo appliance on this machine. Starts swtpm (the TPM, state in data/tpm), camsim with two
# simulated cameras (password generated at first run, never a default) and nvrd recording them into ./data.
# Ctrl-C stops all three; nvrd closes its segments first.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${NVR_DATA:-./data}
mkdir -p "$data/tpm" "$data/run"
chmod 700 "$data" "$data/run"

tpm_port=${NVR_TPM_PORT:-2321}
rtsp=${NVR_CAMSIM_RTSP:-127.0.0.1:8554}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# Camera password: generated once, kept with mode 600, handed to camsim and nvrd by file only.
pw="$data/run/camera-password"
if [ ! -s "$pw" ]; then
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$pw")
fi
creds="$data/run/camera-credentials"
(umask 077; printf '* admin %s\n' "$(cat "$pw")" > "$creds")

# swtpm and camsim run in their own sessions, so that Ctrl-C reaches nvrd first: it closes its segments
# while its TPM and cameras are still there; the trap then stops them.
setsid swtpm socket --tpm2 --tpmstate dir="$data/tpm" --flags not-need-init,startup-clear \
  --server type=tcp,port="$tpm_port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1 &
pids+=($!)
echo "make run: TPM       swtpm on 127.0.0.1:$tpm_port (state in $data/tpm; a simulated TPM, not a hardware one)"

setsid bin/camsim -rtsp "$rtsp" -cameras 2 -clips build/clips -user admin -password-file "$pw" -log-level warn &
pids+=($!)
echo "make run: cameras   camsim rtsp://$rtsp/cam1 and /cam2 (user admin, password in $pw)"

for i in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$tpm_port") 2>/dev/null && (exec 3<>"/dev/tcp/${rtsp%:*}/${rtsp##*:}") 2>/dev/null; then break; fi
  sleep 0.1
done

echo "make run: recorder  nvrd recording into $data (Ctrl-C to stop)"
bin/nvrd -data "$data" -tpm "swtpm:127.0.0.1:$tpm_port" -camera-credentials "$creds" \
  -camera "cam1=rtsp://$rtsp/cam1" -camera "cam2=rtsp://$rtsp/cam2" &
nvrd=$!
pids=("$nvrd" "${pids[@]}")
wait "$nvrd"
