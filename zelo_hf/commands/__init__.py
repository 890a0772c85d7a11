"""CLI commands; see zelo_hf/cli.py."""
