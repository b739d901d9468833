"""Pod sandboxes and containers: OCI spec, runc/conmon drivers, mounts, cgroups, state."""
