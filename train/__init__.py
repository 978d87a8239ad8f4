"""Training: paired data, synthetic blur, losses, the loop, checkpoints and MLflow logging."""
