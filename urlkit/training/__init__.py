"""Training helpers: the LightningModule, per-step telemetry, non-finite guard, checkpoints, callbacks, loggers."""
