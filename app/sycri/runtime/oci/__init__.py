"""The OCI runtime spec as a pure function of the request, and the host facts it reads."""
