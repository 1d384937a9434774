# Masking sweep at the probe (2026-12-04, code f8fb666..2dccf0f for the pretraining, 04fdbd2 for the probe).
# Run from a checkout with the 'study' preset under data/ (evcmae-study generates it on first use).
# Each variant is the study's full pretraining command (results/ablation_probe/commands.sh,
# pretrain-full) with one masking setting changed; the baseline is that study's full teacher.
BASE="paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null backbone.blocks=[1,1,1,1] data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0"
evcmae-pretrain $BASE 'masking.patch_size=[4,4]' hydra.run.dir=outputs/mask/tube4
evcmae-pretrain $BASE 'masking.patch_size=[16,16]' hydra.run.dir=outputs/mask/tube16
evcmae-pretrain $BASE masking.ratio=0.5 hydra.run.dir=outputs/mask/ratio05
evcmae-pretrain $BASE masking.ratio=0.9 hydra.run.dir=outputs/mask/ratio09
evcmae-probe outputs/abl/pretrain/full --data-root=data/study --split=val --max-windows=64 --compare outputs/mask/tube4 outputs/mask/tube16 outputs/mask/ratio05 outputs/mask/ratio09 --json=results/masking_probe/probe.json
