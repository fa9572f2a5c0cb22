"""study: Ray Tune + Optuna glue around kd/ (config, search spaces, trainable, runner)."""
