"""How RL changed a model: metrics (`metrics`), their run over checkpoints (`run`), plots, and `self-improve`."""
