#!/bin/sh
# On the GPU machine, from a folder G made by build.sh (+ app/, whl/ and gpu_pod.py copied
# in): install the carried wheels, make the carried shared libraries findable (runc
# re-executes itself without its environment), and run gpu_pod.py. Results go to $OUT.
#   G=/path/.gpu OUT=/path/out sh bench/gpu/device.sh
set -u
G=$(realpath "${G:-.gpu}")
PY=${PY:-python3}
if [ -z "${NO_WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$G"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$G/app
else
    export PYTHONPATH=$G/app
fi
for f in "$G"/lib/*; do
    n=$(basename "$f")
    ldconfig -p | grep -q " $n " || cp "$f" /usr/local/lib/
done
ldconfig
export PATH=$G/bin:$PATH
grep -q cgroup2 /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
for m in overlay squashfs loop fuse; do modprobe "$m" 2>/dev/null; done
PYTHONUNBUFFERED=1 "$PY" "$G/gpu_pod.py" --sif "$G/gpu.sif" --bin-dir "$G/bin" --out "$OUT" "$@"
