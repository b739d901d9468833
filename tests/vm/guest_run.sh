#!/bin/sh
# In the guest (from sycri-guest.service): facts about the node, the extra 9p shares
# (sycri.shares=tag:path,... on the kernel command line) at their host paths, then the
# task the host asked for in $1/task: the guest checks with pytest (default) or critest
# (guest_critest.sh). Results and logs go to $1 (the results share).
out=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 126
{
  echo "kernel: $(uname -r)"
  echo "systemd: $(systemctl --version | head -1)"
  echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  echo "subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
} > "$out/facts.txt"
for arg in $(cat /proc/cmdline); do
  case $arg in
    sycri.shares=*) shares=${arg#sycri.shares=} ;;
    sycri.venv=*) venv=${arg#sycri.venv=} ;;
  esac
done
for share in $(echo "${shares:-}" | tr , ' '); do
  mkdir -p "${share#*:}"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "${share%%:*}" "${share#*:}" || exit 126
done
# The host's .venv may be built on another python 3.11 build (pyenv): a guest venv on
# Debian's python3 that reads the host venv's site-packages (same minor version).
site=$(echo "${venv:-$repo/.venv}"/lib/python3*/site-packages)
/usr/bin/python3 -m venv --without-pip /run/gvenv || exit 126
echo "import site; site.addsitedir('$site')" > "$(echo /run/gvenv/lib/python3*/site-packages)/host.pth"
# This tree's code, not the one the venv's editable install names.
export PYTHONPATH="$repo/app" PYTHONDONTWRITEBYTECODE=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$(cat "$out/task" 2>/dev/null)" = critest ]; then
  exec sh "$repo/tests/vm/guest_critest.sh" "$out"
fi
exec /run/gvenv/bin/python -m pytest -p no:cacheprovider -o addopts="" -q -rA \
  --junitxml="$out/junit.xml" "$repo/tests/vm/guest_checks.py" $(cat "$repo/tests/vm/pytest-args" 2>/dev/null)
