"""The layering, checked for every package of the project (docs/architecture.md, "Layering"):

    lab                       the CLI, the experiment pipeline, the analysis: may import everything
    organism                  the model organism: priming, rl and everything below
    priming, rl               beside each other (neither imports the other)
    behavior_classifier       runtime, countdown_env
    runtime                   countdown_env
    countdown_env             nothing else of the project (pure Python)
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports (absolute names; relative imports resolved within the package)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(f"{package}.{node.module or ''}" if node.level else node.module or "")
        found[str(path.relative_to(REPO))] = names
    return found


def importers_of(package: str, banned: str) -> list[str]:
    return [f"{file}: {name}" for file, names in imported_modules(package).items() for name in sorted(names)
            if name == banned or name.startswith(banned + ".")]  # fmt: skip


PACKAGES = ("countdown_env", "runtime", "behavior_classifier", "priming", "rl", "organism", "lab")
#: What each package may import of the project (itself aside).
ALLOWED = {
    "countdown_env": set(),
    "runtime": {"countdown_env"},
    "behavior_classifier": {"countdown_env", "runtime"},
    "priming": {"countdown_env", "runtime", "behavior_classifier"},
    "rl": {"countdown_env", "runtime", "behavior_classifier"},
    "organism": {"countdown_env", "runtime", "behavior_classifier", "priming", "rl"},
    "lab": {"countdown_env", "runtime", "behavior_classifier", "priming", "rl", "organism"},
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_imports_only_the_layers_below_it(package: str) -> None:
    banned = set(PACKAGES) - ALLOWED[package] - {package}
    assert [hit for other in sorted(banned) for hit in importers_of(package, other)] == []


def test_the_rule_covers_every_package() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench", "notebooks"}
    assert packages == set(PACKAGES) == set(ALLOWED)


def test_the_layers_are_a_ladder() -> None:
    # No two packages may import each other: the allowed sets form no circle.
    for package, allowed in ALLOWED.items():
        assert all(package not in ALLOWED[other] for other in allowed), package


def test_no_shims_are_left() -> None:
    # Modules that only re-export another package's names (the old rl.models, rl.generation, rl.run_dir,
    # behavior_classifier.jsonl, runtime.jsonl) are gone; everything imports the real home.
    for gone in ("rl/models.py", "rl/generation.py", "rl/run_dir.py", "behavior_classifier/jsonl.py", "runtime/jsonl.py"):
        assert not (REPO / gone).exists(), gone


def test_the_scan_sees_imports_inside_functions() -> None:
    # priming/sft.py imports its model loaders inside a function: the scan must see those too.
    assert "runtime.models" in imported_modules("priming")["priming/sft.py"]


def test_runtime_package_and_jsonl_import_no_torch() -> None:
    code = "import sys, runtime, countdown_env.files; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_code_and_docs_cite_only_files_in_the_repository() -> None:
    # Notes outside the repository (the project's shared folder) are not shipped with it.
    root = Path(__file__).resolve().parents[2]
    cited = []
    for path in root.rglob("*"):
        if path.suffix not in {".py", ".md", ".yaml", ".ipynb", ".cfg"} or any(
            p.startswith(".") or p == "runs" for p in path.relative_to(root).parts
        ):
            continue
        text = path.read_text(errors="ignore")
        cited += [
            str(path.relative_to(root)) for name in ("CALIBRATION", "CONTRACT", "STYLE") if f"shared/{name}" in text or f"{name}.md" in text
        ]
    assert cited == []
