"""What priming and rl both stand on: models, batched generation, the run directory and JSONL files.

Kept free of imports here: `countdown_env` (pure Python) uses `countdown_env.files`, so importing this
package must not pull in torch. `runtime.models` and `runtime.run_dir` import torch lazily;
`runtime.generation` imports it at the top.
"""
