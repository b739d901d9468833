"""Cgroups: pod parents per driver and version, systemd slices, placement, usage, OOM."""
