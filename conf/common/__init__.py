"""Config groups shared by the evcmae-* Hydra apps (trainer, logger, backbone, launchers); each
app adds this package to its search path."""
