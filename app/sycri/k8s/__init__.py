"""What talks to the Kubernetes API: node labels and events."""
