import pytest

from runtime.models import init_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny randomly initialised Qwen2 model saved like a hub checkpoint (built once per session)."""
    return init_model(tmp_path_factory.mktemp("models") / "tiny", "qwen2", "tiny", seed=0)


#: A PPO config small enough for a step to take a fraction of a second on one CPU core.
FAST = [
    "prompts_per_step=4",
    "rollouts_per_prompt=2",
    "max_new_tokens=16",
    "num_train_tasks=40",
    "num_eval_tasks=4",
    "mini_batch_size=4",
    "save_every=1",
    "eval_every=2",
    "log_rollouts=3",
]


def fast_args(model, out, *extra):
    args = ["ppo", "--model", str(model), "--output-dir", str(out), "--no-progress"]
    for item in FAST:
        args += ["--set", item]
    return args + [str(e) for e in extra]
