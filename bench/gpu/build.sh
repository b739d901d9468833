#!/bin/sh
# Build, on this Debian machine, what bench/gpu/gpu_pod.py needs on a GPU machine that has
# only Python and the NVIDIA driver: the image (a SIF of busybox, glibc and cudacheck, a
# C program that needs no CUDA headers), and runc, conmon, catatonit and squashfuse with
# the shared libraries they need (glibc excepted), behind wrappers that set
# LD_LIBRARY_PATH for them alone.
#
#   bench/gpu/build.sh DEST     (then: PATH=DEST/bin:$PATH python3 bench/gpu/gpu_pod.py
#                                --sif DEST/gpu.sif --bin-dir DEST/bin --out OUT)
set -eu
DEST=$(realpath -m "$1")
HERE=$(dirname "$(realpath "$0")")
APP=$(realpath "$HERE/../../app")
rm -rf "$DEST/bin" "$DEST/libexec" "$DEST/lib" "$DEST/rootfs" "$DEST/gpu.sif"
mkdir -p "$DEST/bin" "$DEST/libexec" "$DEST/lib"

# --- the image ------------------------------------------------------------------------
R="$DEST/rootfs"
mkdir -p "$R/bin" "$R/usr/bin" "$R/lib64" "$R/lib/x86_64-linux-gnu" "$R/usr/lib/x86_64-linux-gnu" \
    "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/root"
cp /bin/busybox "$R/bin/busybox"
for app in sh cat ls echo env grep test true head od uname id; do ln -s busybox "$R/bin/$app"; done
gcc -O2 -Wall -o "$R/usr/bin/cudacheck" "$HERE/cudacheck.c" -ldl
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
for lib in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1 libstdc++.so.6; do
    cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')" \
        "$R/lib/x86_64-linux-gnu/$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\nvideo:x:44:\nnogroup:x:65534:\n' >"$R/etc/group"
mksquashfs "$R" "$DEST/rootfs.sqfs" -noappend -no-progress -quiet -comp lz4 -all-root
PYTHONPATH="$APP" "${PYTHON:-python3}" - "$DEST" <<'EOF'
import json, sys
from sycri.sif import JsonObject, PartitionObject, write_sif

dest = sys.argv[1]
# LD_LIBRARY_PATH as NVIDIA's CUDA images set it, for drivers mounted at /usr/local/nvidia
config = {"config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"],
                     "Cmd": ["/bin/sh"]}}
write_sif(f"{dest}/gpu.sif", [JsonObject("oci-config.json", json.dumps(config).encode()),
                              PartitionObject(f"{dest}/rootfs.sqfs")])
EOF
cp "$R/usr/bin/cudacheck" "$DEST/cudacheck"  # the same program, for a run on the host
rm -rf "$R" "$DEST/rootfs.sqfs"

# --- the runtime's programs -----------------------------------------------------------
for prog in runc conmon squashfuse fusermount3; do
    path=$(command -v "$prog")
    cp "$path" "$DEST/libexec/$prog"
    ldd "$path" | awk '/=> \// {print $3}' | while read -r lib; do
        case "$(basename "$lib")" in
        libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.*) ;;
        *) cp -L "$lib" "$DEST/lib/" ;;
        esac
    done
    cat >"$DEST/bin/$prog" <<EOF
#!/bin/sh
d=\$(dirname "\$(readlink -f "\$0")")/..
LD_LIBRARY_PATH="\$d/lib" exec "\$d/libexec/$prog" "\$@"
EOF
    chmod 755 "$DEST/bin/$prog"
done
cp "$(command -v catatonit)" "$DEST/bin/catatonit"  # static
du -sh "$DEST"
