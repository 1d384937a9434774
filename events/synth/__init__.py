"""ESIM-style synthetic traffic recordings with box labels."""
