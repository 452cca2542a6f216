"""`experiment` on GPUs: refuses up front when PPO will not fit, launches PPO through accelerate on several GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.cli import main
from lab.pipeline.config import load_experiment
from lab.pipeline.stages import rl_launch_command


def test_experiment_refuses_before_any_stage_when_ppo_will_not_fit(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["experiment", "--preset", "paper-3b", "--set", "gpus=1", "--set", "gpu_memory_gb=24", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "PPO needs" in err and "fits with: --set" in err
    assert not (out / "experiment.json").exists()


def test_several_gpus_launch_ppo_through_accelerate(tmp_path):
    config = load_experiment("paper-3b")
    assert config.gpus == 4
    ppo = config.ppo_config("meta-llama/Llama-3.2-3B", 0)
    cmd = rl_launch_command(config, ppo, tmp_path, tmp_path / "ppo.yaml", tmp_path / "tasks.jsonl", resume=True)
    launch = cmd.index("launch")
    assert cmd[launch - 1].endswith("accelerate_cli") and cmd[cmd.index("--num_processes") + 1] == "4"
    accelerate_config = Path(cmd[cmd.index("--config_file") + 1])
    assert accelerate_config.name == f"{ppo.sharding}.yaml" and accelerate_config.exists()
    assert cmd[cmd.index("-m", launch) + 1 :][:2] == ["lab.cli", "ppo"] and cmd[-1] == "--resume"


def test_gpus_need_one_job():
    with pytest.raises(ValueError, match="jobs=1"):
        load_experiment("paper-3b", {"jobs": 2})
