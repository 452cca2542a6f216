"""RL on Countdown: tiny models, PPO (transformers + accelerate), GRPO/RLOO (TRL), evaluation.

Submodules import torch; import them directly (`from rl.models import load_model`).
"""
