"""Resource usage of containers and pods, as the CRI stats RPCs report it."""
