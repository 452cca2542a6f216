"""The model organism: tiny base models pretrained from scratch to have (`rich`) or lack (`poor`) the behaviours.

`text` writes its synthetic Countdown text, `pretrain` builds and caches the bases, `bases/` ships the seed-0
bases, `presets/` holds its experiment presets (`organism`, `demo`) and its RL preset (`ppo-organism`).
"""
