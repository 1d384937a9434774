"""Command-line scripts, installed as the package ``evcmae_tools`` (console scripts evcmae-*)."""
