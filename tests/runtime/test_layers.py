"""The layering: countdown_env (pure Python) < runtime < priming < rl; nothing imports upwards."""

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


@pytest.mark.parametrize(("package", "banned"), [("priming", "rl"), ("runtime", "rl"), ("runtime", "priming"), ("countdown_env", "rl"),
                                                  ("countdown_env", "priming")])  # fmt: skip
def test_no_module_imports_a_layer_above_it(package: str, banned: str) -> None:
    assert importers_of(package, banned) == []


def test_the_scan_sees_imports_inside_functions() -> None:
    # priming/sft.py imports its model loaders inside a function: the scan must see those too.
    assert "runtime.models" in imported_modules("priming")["priming/sft.py"]


def test_runtime_package_and_jsonl_import_no_torch() -> None:
    code = "import sys, runtime, runtime.jsonl; assert 'torch' not in sys.modules, 'torch imported'"
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
        cited += [str(path.relative_to(root)) for name in ("CALIBRATION", "CONTRACT", "STYLE") if f"shared/{name}" in text]
    assert cited == []
