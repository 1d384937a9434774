"""Logger factories that Hydra calls (``conf/logger``).

wandb without credentials would stop the run to ask for a key (or fail on a machine with no
network); the factory instead logs offline there, into the run folder, and says so. An offline
run can be uploaded later with ``wandb sync <run dir>/wandb/offline-run-*``."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse


def wandb_api_key_configured() -> bool:
    """True when WANDB_API_KEY is set or ~/.netrc (or $NETRC) holds a login for the wandb host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(project: str = "evcmae", save_dir: str = ".", offline: bool | None = None, **kwargs):
    """A Lightning ``WandbLogger``; ``offline=None`` decides from whether an API key is configured."""
    from pytorch_lightning.loggers import WandbLogger

    if offline is None:
        offline = not wandb_api_key_configured()
        if offline:
            print(
                "evcmae: no wandb API key configured (WANDB_API_KEY or ~/.netrc): logging offline to "
                f"{save_dir}/wandb; upload later with `wandb sync`"
            )
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, offline=offline, **kwargs)
