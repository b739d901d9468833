"""A pod sandbox: its record, namespaces, shared files, init process, user namespace, sysctls."""
