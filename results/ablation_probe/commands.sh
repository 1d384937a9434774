# The runs evcmae-study made, in order (run from the directory it ran in)
# evcmae-study 'label_fractions=[]' 'frozen.seeds=[]' 'ablation.seeds=[]' 'ablation.conditions=[no_occupancy,no_reconstruction,no_voxel_nce,no_frame_contrastive,no_rvt_stages,occupancy_only]' out=results/ablation_probe work_dir=outputs/abl jobs=2
# pretrain-full
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 hydra.run.dir=outputs/abl/pretrain/full
# pretrain-no_occupancy
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 loss.weights.occupancy=0 hydra.run.dir=outputs/abl/pretrain/no_occupancy
# pretrain-no_reconstruction
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 loss.weights.reconstruction=0 hydra.run.dir=outputs/abl/pretrain/no_reconstruction
# pretrain-no_voxel_nce
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 loss.weights.voxel_nce=0 hydra.run.dir=outputs/abl/pretrain/no_voxel_nce
# pretrain-no_frame_contrastive
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 loss.weights.frame_contrastive=0 hydra.run.dir=outputs/abl/pretrain/no_frame_contrastive
# pretrain-no_rvt_stages
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 loss.weights.rvt_stages=0 hydra.run.dir=outputs/abl/pretrain/no_rvt_stages
# pretrain-occupancy_only
evcmae-pretrain paths.data_dir=data logger=csv trainer.enable_progress_bar=false callbacks.progress_bar=null 'backbone.blocks=[1,1,1,1]' data=study trainer.check_val_every_n_epoch=1000 trainer.max_steps=600 seed=0 experiment=occupancy_only hydra.run.dir=outputs/abl/pretrain/occupancy_only
# probe
evcmae-probe outputs/abl/pretrain/full --data-root=data/study --split=val --max-windows=64 --references --json=outputs/abl/probe/probe.json --compare outputs/abl/pretrain/no_occupancy outputs/abl/pretrain/no_reconstruction outputs/abl/pretrain/no_voxel_nce outputs/abl/pretrain/no_frame_contrastive outputs/abl/pretrain/no_rvt_stages outputs/abl/pretrain/occupancy_only
