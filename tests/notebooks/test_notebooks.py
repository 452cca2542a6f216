"""The notebooks run top to bottom (they are thin: the logic they show is tested elsewhere)."""

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{out['ename']}: {out['evalue']}" for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_countdown_env_notebook_runs_and_shows_rejected_exploits():
    nb = run_notebook("countdown_env.ipynb")
    text = outputs_text(nb)
    assert "disallowed_operation" in text and "correct" in text
    assert not errors(nb)


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_behavior_frequencies_notebook_shows_a_run(quick_experiment, monkeypatch):
    monkeypatch.setenv("COUNTDOWN_RUN_DIR", str(quick_experiment))  # the kernel inherits the environment
    nb = run_notebook("behavior_frequencies.ipynb")
    assert not errors(nb)
    text = outputs_text(nb)
    assert "only_backtracking" in text and "empty_cot" in text
    assert "same columns as ours: True" in text  # the study's shipped CSVs load beside our table
    assert (quick_experiment / "plots" / "notebook_behaviors.png").exists()


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_analysis_notebook_analyses_and_shows_a_run(quick_experiment, monkeypatch):
    monkeypatch.setenv("COUNTDOWN_RUN_DIR", str(quick_experiment))
    nb = run_notebook("analysis.ipynb")
    assert not errors(nb)
    text = outputs_text(nb)
    assert "kl_to_base" in text and "pass@16" in text and "drift at the last step" in text
    assert (quick_experiment / "analysis_comparison.png").exists()
    runs = sorted((quick_experiment / "runs").glob("*/analysis/analysis.json"))
    assert runs and all(json.loads(p.read_text())["kl_to_base"][0]["value"] == 0.0 for p in runs)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
