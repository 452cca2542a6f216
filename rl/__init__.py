"""RL on Countdown: tiny models, PPO (transformers + accelerate), GRPO/RLOO (TRL), evaluation.

Submodules import torch; import them directly (`from runtime.models import load_model`).
"""
