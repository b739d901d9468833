"""The streaming server behind Exec, Attach and PortForward."""
