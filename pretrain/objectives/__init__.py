"""The pretraining terms, one self-contained objective per file.

Each objective is an ``nn.Module`` built by Hydra from ``conf/pretrain/loss/*.yaml`` (``_target_``,
``_partial_``): its weight λ, the backbone scale(s) it reads, its decoder or head and its criterion
are constructor arguments; the LightningModule completes it with the backbone's channels and
loops over whatever objectives the config lists. A fifth term is one file here and one entry in
the loss config. The contract is :class:`evcmae.pretrain.objectives.base.Objective`.
"""
