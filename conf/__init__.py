"""Hydra configuration tree (installed as the package ``evcmae.conf``).

Importing it registers the ``evcmae.required`` resolver: a dataset config writes
``root: ${evcmae.required:gen1,root}`` so that using it without ``data.root=...`` stops with a
sentence naming the dataset and the key, rather than reading some default folder (a ``???``
value inherited over another config's root is silently replaced by that root)."""

from omegaconf import OmegaConf


def _required(dataset: str, key: str = "root"):
    raise ValueError(
        f"data={dataset} needs data.{key}: add data.{key}=/path/to/{dataset} "
        f"(the folder holding train/ val/ test/) to the command line"
    )


OmegaConf.register_new_resolver("evcmae.required", _required, replace=True)
