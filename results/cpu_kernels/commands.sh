# Run from the clone results/bn_eps ran in, each stopped once its first validation (step 149) was logged.
FT="evcmae-finetune paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study model.bn_recalibration_batches=20 model.encoder_freeze_steps=0 model.encoder_mode=full data.label_fraction_mode=timestamps trainer.max_steps=600 trainer.val_check_interval=150 optim.lr=0.002 data.label_fraction=0.1 validate_best=false seed=0"
# Pre-registered: all three libraries capped.
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 eval $FT record.root=outputs/cpu_kernels/scratch-seed0-avx2/record hydra.run.dir=outputs/cpu_kernels/scratch-seed0-avx2
# After it: torch alone, then torch and oneDNN.
ATEN_CPU_CAPABILITY=avx2 eval $FT record.root=outputs/cpu_kernels/scratch-seed0-aten-avx2/record hydra.run.dir=outputs/cpu_kernels/scratch-seed0-aten-avx2
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 eval $FT record.root=outputs/cpu_kernels/scratch-seed0-aten-onednn-avx2/record hydra.run.dir=outputs/cpu_kernels/scratch-seed0-aten-onednn-avx2
