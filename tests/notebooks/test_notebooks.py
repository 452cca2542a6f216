"""The notebooks run top to bottom (they are thin: the logic they show is tested elsewhere)."""

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env) if env else client.execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_countdown_env_notebook_runs_and_shows_rejected_exploits():
    nb = run_notebook("countdown_env.ipynb")
    text = outputs_text(nb)
    assert "disallowed_operation" in text and "correct" in text
    assert not any(out.get("output_type") == "error" for cell in nb.cells for out in cell.get("outputs", []))


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
