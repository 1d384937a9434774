# Run from the clone results/bn_eps ran in (its outputs/bn_eps holds the scratch baselines;
# outputs/abl_fc/pretrain/full is the full method's teacher made by results/abl_fc's study). Two at a time.
FT="evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false model.pretrained=outputs/abl_fc/pretrain/full"
for SEED in 0 1 2 3; do
eval $FT seed=$SEED record.root=outputs/same_install/full-eps1e-5-seed$SEED/record hydra.run.dir=outputs/same_install/full-eps1e-5-seed$SEED
eval $FT seed=$SEED model.detector.bn_eps=0.001 record.root=outputs/same_install/full-eps1e-3-seed$SEED/record hydra.run.dir=outputs/same_install/full-eps1e-3-seed$SEED
done
# After all eight had chosen their checkpoints: each default-eps pair's best checkpoint tested once.
for RUN in outputs/bn_eps/scratch-eps1e-5-seed{0,1,2,3} outputs/same_install/full-eps1e-5-seed{0,1,2,3}; do
evcmae-evaluate checkpoint=$RUN/checkpoints/best-step=600.ckpt split=test out=$RUN/eval_test
done
# Tables and diagnosis:
python results/same_install/compare.py outputs > results/same_install/comparison.md
python results/abl_terms/diagnose_collapse.py outputs/same_install/*/checkpoints/best-step=600.ckpt
# Added after the four-seed results: seeds 4 and 5 at the default eps, scratch (as results/bn_eps's command) and the full method.
for SEED in 4 5; do
eval ${FT% model.pretrained=*} seed=$SEED record.root=outputs/same_install/scratch-eps1e-5-seed$SEED/record hydra.run.dir=outputs/same_install/scratch-eps1e-5-seed$SEED
eval $FT seed=$SEED record.root=outputs/same_install/full-eps1e-5-seed$SEED/record hydra.run.dir=outputs/same_install/full-eps1e-5-seed$SEED
done
# A diagnostic after the runs: the seed-1 pair rescored on test under objectness x class.
for RUN in outputs/same_install/full-eps1e-5-seed1 outputs/bn_eps/scratch-eps1e-5-seed1; do
evcmae-evaluate checkpoint=$RUN/checkpoints/best-step=600.ckpt split=test eval.protocol=yolox out=$RUN/eval_test_yolox
done
