"""Hydra configuration tree (installed as the package ``evcmae.conf``)."""
