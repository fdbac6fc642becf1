"""Command-line entry points: ``python -m espnet_prune.bin.<name> --help``."""
