"""Command-line scripts, installed as the package ``evcmae.tools`` (console scripts evcmae-*)."""
