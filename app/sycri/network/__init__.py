"""CNI: network configuration and plugin invocation for pod sandboxes."""
