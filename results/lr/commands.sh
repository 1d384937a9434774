# The fine-tuning-noise pilot (results/lr/README.md), run from the repository root: steps 1-3 and 5
# at commit 7760ac6, step 4 at 7d85112.
# Scratch at 10 % labels on the labelled pair synth_train_000 + 002 (the subset seeds 2 and 4 draw),
# the study's fine-tuning command otherwise; val only. The lr 2e-3 reference runs are results/ema's
# live weights (same command, same four training seeds).
FT='paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null backbone.blocks=[1,1,1,1] data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=recordings trainer.max_steps=900 trainer.val_check_interval=150 data.label_fraction=0.1 validate_best=false'
# 1. Peak learning rate 5e-4 instead of 2e-3, three of the four training seeds.
#    (data.subset_seed=2 and =4 draw the same pair; seed 2's run was launched with its own.)
for s in 2 4 1004; do ss=$([ $s = 2 ] && echo 2 || echo 4)
evcmae-finetune $FT optim.lr=0.0005 seed=$s data.subset_seed=$ss record.root=outputs/lr/scratch-lr0.0005-seed$s/record hydra.run.dir=outputs/lr/scratch-lr0.0005-seed$s
done
# 2. Lr 2e-3 with OneCycle's warm-up over 10 % of the steps (90) instead of 0.5 % (4.5; RVT's share
#    of its 400k steps), on training seed 1004, the worst of the four.
evcmae-finetune $FT optim.lr=0.002 optim.warmup=0.1 seed=1004 data.subset_seed=4 record.root=outputs/lr/scratch-warmup0.1-seed1004/record hydra.run.dir=outputs/lr/scratch-warmup0.1-seed1004
# 3. Lr 2e-3, the detector's initialisation (seed) and the training stream (data.seed: order and
#    augmentation) taken from different training seeds: 4 and 1004, the best and worst of the four.
#    Both were stopped after the step-450 validation, once the answer was clear, to free the cores.
for pair in "4 1004" "1004 4"; do set -- $pair
evcmae-finetune $FT optim.lr=0.002 seed=$1 data.seed=$2 data.subset_seed=4 record.root=outputs/lr/scratch-init$1-data$2/record hydra.run.dir=outputs/lr/scratch-init$1-data$2
done
# 4. At commit 7d85112 (each epoch draws its own chunks and augmentation), lr 2e-3, seeds 4 and 1004:
for s in 4 1004; do
evcmae-finetune $FT optim.lr=0.002 seed=$s data.subset_seed=4 record.root=outputs/lr/scratch-epochfix-seed$s/record hydra.run.dir=outputs/lr/scratch-epochfix-seed$s
done
# 5. BatchNorm statistics re-estimated over the labelled training data (one pass, 13 batches) on two
#    low runs' final weights, then scored on val (the logged step-900 val AP is the reference):
for r in scratch-lr0.0005-seed2 scratch-warmup0.1-seed1004; do
python results/lr/precise_bn.py outputs/lr/$r/checkpoints/last.ckpt outputs/lr/precise_bn/$r.ckpt
evcmae-evaluate checkpoint=outputs/lr/precise_bn/$r.ckpt split=val out=outputs/lr/precise_bn/$r-val
done
python results/lr/collect.py outputs/lr > results/lr/val_curves.json
