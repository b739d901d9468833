"""The Singularity Image Format: read, write and verify SIF files."""
