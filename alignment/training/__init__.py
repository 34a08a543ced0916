"""Training: the losses (paper equations), the objectives and collation built on them, log-probs, the trainer loop,
held-out evaluation and early stopping, the KL estimate, multi-process and sharded (FSDP2) training, metric
logging, and the on-policy pairs that preference training learns from."""
