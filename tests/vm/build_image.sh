#!/usr/bin/env bash
# Build the guest disk image for the cgroup v2 VM tests: a Debian bookworm rootfs
# (systemd on the unified hierarchy, the packages sycri runs with, a kernel and an
# initrd made inside the chroot) packed into a sparse raw ext4 image.
#
# Usage: build_image.sh OUTDIR MIRROR
# Writes OUTDIR/{base.img,vmlinuz,initrd.img} atomically (a .tmp dir renamed at
# the end), so a half-built image is never taken for a cached one.
set -euo pipefail
out=$1
mirror=$2
tmp="$out.tmp.$$"
root="$tmp/root"
rm -rf "$tmp"
mkdir -p "$root"
cleanup() { umount -R "$root/proc" "$root/sys" "$root/dev" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

pkgs=(
  systemd systemd-sysv udev dbus kmod util-linux procps
  linux-image-amd64 initramfs-tools
  python3 python3-venv
  runc conmon catatonit squashfs-tools squashfs-tools-ng squashfuse fuse3 siftool
  containernetworking-plugins iptables iproute2 busybox-static docker-registry gpgv gpg
)
include=$(IFS=,; echo "${pkgs[*]}")
debootstrap --variant=minbase --components=main --include="$include" bookworm "$root" "$mirror"

# Guest configuration: no network config of its own (tests make their own
# bridges), root on the virtio disk, a oneshot unit that runs the repo's guest
# script and powers off.
echo sycri-vm > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
printf '9p\n9pnet\n9pnet_virtio\nfuse\noverlay\nbr_netfilter\nveth\nbridge\n' > "$root/etc/modules-load.d/sycri.conf"
install -m 0755 "$(dirname "$0")/guest_boot.sh" "$root/usr/local/sbin/sycri-guest-boot"
cat > "$root/etc/systemd/system/sycri-guest.service" <<'UNIT'
[Unit]
Description=sycri VM test run (script from the 9p-shared repo)
After=local-fs.target systemd-modules-load.service dbus.service
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sycri-guest-boot
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/sycri-guest.service "$root/etc/systemd/system/multi-user.target.wants/sycri-guest.service"
# Nothing that waits for a network or a login on the serial line.
for u in getty@tty1.service serial-getty@ttyS0.service systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
chroot "$root" systemctl set-default multi-user.target >/dev/null
# Initrd with the virtio disk driver (Debian builds it as a module).
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
kver=$(ls "$root/lib/modules" | head -1)
chroot "$root" update-initramfs -c -k "$kver" >/dev/null
cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
truncate -s 3G "$tmp/base.img"
mkfs.ext4 -q -F -d "$root" -L sycri-root "$tmp/base.img"
rm -rf "$root"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
