# Run from a clone with the study data in data/ (as results/abl_fc's work directory, whose teacher
# outputs/abl_fc/pretrain/no_frame_contrastive run 1 starts from). Two at a time on the two cores.
FT="evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false"
# 1. The collapse case at eps 1e-3.
eval $FT seed=2 model.pretrained=outputs/abl_fc/pretrain/no_frame_contrastive model.detector.bn_eps=0.001 record.root=outputs/bn_eps/collapse-eps1e-3/record hydra.run.dir=outputs/bn_eps/collapse-eps1e-3
# 2.-3. Scratch, seeds 0-3, at eps 1e-3 and at the default eps (seed 0 at the default is the reproduction check).
for SEED in 0 1 2 3; do
eval $FT seed=$SEED model.detector.bn_eps=0.001 record.root=outputs/bn_eps/scratch-eps1e-3-seed$SEED/record hydra.run.dir=outputs/bn_eps/scratch-eps1e-3-seed$SEED
eval $FT seed=$SEED record.root=outputs/bn_eps/scratch-eps1e-5-seed$SEED/record hydra.run.dir=outputs/bn_eps/scratch-eps1e-5-seed$SEED
done
# The reproduction check at t600's code: a worktree at 0e9e6ba with its own editable install, the seed-0 default-eps command, stopped after step 149.
# Tables and diagnosis:
python results/bn_eps/compare.py outputs/bn_eps > results/bn_eps/comparison.md
python results/abl_terms/diagnose_collapse.py outputs/bn_eps/*/checkpoints/best-step=600.ckpt
# The diagnostic after the runs: each collapse-case checkpoint evaluated on val at the other eps (and at its own, as a control).
python results/bn_eps/eval_eps.py outputs/collapse_lr/lr0.002/checkpoints/best-step=600.ckpt 0.001 outputs/bn_eps/posthoc/collapse-1e-5-evaluated-at-1e-3
python results/bn_eps/eval_eps.py outputs/bn_eps/collapse-eps1e-3/checkpoints/best-step=600.ckpt 0.00001 outputs/bn_eps/posthoc/collapse-1e-3-evaluated-at-1e-5
python results/bn_eps/eval_eps.py outputs/collapse_lr/lr0.002/checkpoints/best-step=600.ckpt 0.00001 outputs/bn_eps/posthoc/collapse-1e-5-evaluated-at-1e-5
python results/bn_eps/eval_eps.py outputs/bn_eps/collapse-eps1e-3/checkpoints/best-step=600.ckpt 0.001 outputs/bn_eps/posthoc/collapse-1e-3-evaluated-at-1e-3
