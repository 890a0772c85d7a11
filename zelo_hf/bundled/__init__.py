"""Bundled offline copies of SciFact and Cranfield in BEIR layout (licenses and provenance: README.md)."""
