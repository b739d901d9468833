#!/bin/sh
# In the guest (guest_run.sh, task "critest"): critest against sycri with the systemd
# driver on cgroup v2, offline, as docs/conformance.md runs it on the host ("mirror"
# mode). $1/critest.env (written by tests/vm/critest.py) names the critest binary
# (CRITEST), the shared critest folder with registries.conf (CRITEST_DIR), the test
# images' registry storage built on the host (REGISTRY_STORAGE), and extra critest
# flags (CRITEST_ARGS). Everything lands in $1: critest.log, junit.xml, summary.txt,
# sycri.log, registry.log.
out=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$out/critest.env"
work=/run/critest
mkdir -p "$work/net.d" "$work/ctmp"

# Debian's docker-registry package starts its own registry on :5000: not ours.
systemctl stop docker-registry.service 2>/dev/null
# The test images, served from the host-built storage on the address sycri's
# registries.conf mirrors to.
cat > "$work/registry.yml" <<CFG
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REGISTRY_STORAGE}
  delete: {enabled: true}
http: {addr: 127.0.0.1:5000}
CFG
setsid docker-registry serve "$work/registry.yml" > "$out/registry.log" 2>&1 < /dev/null &

cat > "$work/sycri.yaml" <<CFG
socket: $work/sycri.sock
root_dir: /var/lib/sycri-critest
run_dir: $work/run
metrics_address: ""
cgroup_driver: systemd
images: {registries_conf: $CRITEST_DIR/registries.conf}
cni: {conf_dir: $work/net.d, default_subnet: 10.234.0.0/16, default_bridge: sycriconf}
CFG
sysctl -qw net.ipv4.ip_forward=1
setsid /run/gvenv/bin/python -m sycri serve --config "$work/sycri.yaml" \
  > "$out/sycri.log" 2>&1 < /dev/null &
/run/gvenv/bin/python - "$work/sycri.sock" $! <<'PY' || { echo "sycri or the registry did not come up"; exit 1; }
import os, sys, time, urllib.request
import grpc
from sycri.api import api_pb2, api_pb2_grpc
deadline = time.monotonic() + 600
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:5000/v2/", timeout=5).read()
        ch = grpc.insecure_channel("unix://" + sys.argv[1])
        api_pb2_grpc.RuntimeServiceStub(ch).Version(api_pb2.VersionRequest(), timeout=5)
        break
    except Exception:
        os.kill(int(sys.argv[2]), 0)  # sycri died: its log says why
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
PY
echo "sycri and the registry up after $(cut -d' ' -f1 /proc/uptime) s of uptime"

# critest's host paths on a shared mount (the mount-propagation specs), as run_critest.sh.
mount --bind "$work/ctmp" "$work/ctmp" && mount --make-rshared "$work/ctmp"
start=$(date +%s)
# shellcheck disable=SC2086
TMPDIR=$work/ctmp "$CRITEST" --runtime-endpoint "unix://$work/sycri.sock" \
  --image-endpoint "unix://$work/sycri.sock" --ginkgo.no-color --ginkgo.v \
  --ginkgo.junit-report "$out/junit.xml" --ginkgo.timeout "${GINKGO_TIMEOUT:-90m}" $CRITEST_ARGS \
  > "$out/critest.log" 2>&1
rc=$?
echo "critest rc $rc in $(( $(date +%s) - start )) s" | tee -a "$out/critest.log"
if [ -s "$out/junit.xml" ]; then
  /run/gvenv/bin/python "$CRITEST_DIR/summarize_junit.py" "$out/junit.xml" > "$out/summary.txt"
  tail -1 "$out/summary.txt"
fi
exit "$rc"
