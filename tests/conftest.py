import pytest


@pytest.fixture(scope="session")
def quick_experiment(tmp_path_factory):
    """One quick experiment (tiny model, a few SFT and PPO steps) shared by the lab and notebook tests."""
    from lab.pipeline.config import ExperimentConfig
    from lab.pipeline.run import run_experiment

    root = tmp_path_factory.mktemp("experiment")
    return run_experiment(ExperimentConfig.load("quick"), root)
