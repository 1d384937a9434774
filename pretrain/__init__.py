"""Self-supervised pretraining: EMA teacher, masked student, Lightning training loop."""
