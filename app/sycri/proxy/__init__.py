"""The CRI front endpoint kubelet talks to: pods of sycri's RuntimeClass handlers go to
sycri, everything else (sycri's own pod included) to the node's existing runtime.

kubelet must never depend on a sycri pod to run the sycri pod; this small, stable
process runs on the host (a systemd unit or a supervised process), not in a pod.
"""
