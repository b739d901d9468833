"""A container: its record, lifecycle, root filesystem, monitor (conmon) and OCI runtime (runc)."""
