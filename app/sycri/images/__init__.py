"""Image references, registry clients, layer unpacking, SIF conversion and the image store."""
