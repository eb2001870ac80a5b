"""What a run records for people: TensorBoard and W&B loggers, the sweep report, provenance, console output."""
