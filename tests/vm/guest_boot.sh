#!/bin/sh
# Runs once in the guest at boot (sycri-guest.service): mount the host's repo
# (9p tag "repo") at the path named by sycri.repo= on the kernel command line —
# the same absolute path as on the host, so the host's .venv works unchanged —
# and the results share (tag "results") at /sycri-results, run the repo's
# tests/vm/guest_run.sh, record its exit status, power off. Kept tiny: what the
# guest does lives in the repo, so changing it never needs an image rebuild.
repo=
for arg in $(cat /proc/cmdline); do
  case $arg in sycri.repo=*) repo=${arg#sycri.repo=} ;; esac
done
mkdir -p /sycri-results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /sycri-results
if [ -n "$repo" ]; then
  mkdir -p "$repo"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose repo "$repo"
fi
echo booted > /sycri-results/booted
if [ -x "$repo/tests/vm/guest_run.sh" ]; then
  "$repo/tests/vm/guest_run.sh" /sycri-results > /sycri-results/guest.log 2>&1
  echo $? > /sycri-results/rc
else
  echo "no tests/vm/guest_run.sh under sycri.repo=$repo" > /sycri-results/guest.log
  echo 127 > /sycri-results/rc
fi
sync
systemctl poweroff --no-block
