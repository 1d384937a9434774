# Pretraining variants of 300 steps, probed on val against the full method on the same boxes
# ("pretrained" in probe.json is runs/full; pretrained_minus_this is full minus that row).
# Run from the checkout (the 'study' preset under data/). 2026-12-02, code at 5bb85f1 (pretraining)
# and ae7ac4b (the probe with intervals).
run() {
  name=$1; shift
  evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null \
    'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=300 seed=0 \
    "$@" hydra.run.dir=runs/$name
}
run full
run balance_none loss.balance.mode=none
run no_voxel_nce loss.weights.voxel_nce=0
run occupancy_only experiment=occupancy_only
ln -s ../outputs/long/pretrain/full runs/full_600steps   # the 600-step study's pretraining (results/long600)
evcmae-probe runs/full --data-root data/study --split val --max-windows 64 --references \
  --compare runs/balance_none runs/no_voxel_nce runs/occupancy_only runs/full_600steps --json probe.json
