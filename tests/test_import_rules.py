"""The import rules of docs/layout.md, as import-linter contracts (pyproject.toml, [tool.importlinter]): the
layers (flows over tasks and the bench, over the arena, over evaluation, over alignment, over storage and the
launcher), no Prefect or MLflow below tasks/, and no import cycle between the modules of any package. Imports
inside functions count, so none can hide a cycle."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_project_keeps_every_import_contract() -> None:
    proc = lint_imports("--no-cache")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert proc.stdout.count(" KEPT") == len(contracts) == 6


def test_a_cycle_an_mlflow_import_or_an_upward_import_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts can fail: a copy of the tree with a cycle hidden in a function (training code importing
    the stages), a kernel and a model module importing training code, MLflow imported by storage/, and storage/
    importing alignment/ (upwards) breaks each of the six contracts."""
    for name in ("pyproject.toml", "flows", "tasks", "bench", "arena", "evaluation", "alignment", "storage",
                 "launcher"):
        source = ROOT / name
        if source.is_dir():
            subprocess.run(["cp", "-r", str(source), str(tmp_path / name)], check=True)
        else:
            (tmp_path / name).write_text(source.read_text())
    with (tmp_path / "alignment" / "training" / "distributed.py").open("a") as fh:
        fh.write("\n\ndef _cycle():\n    from alignment import stages  # noqa: F401\n")
    with (tmp_path / "alignment" / "kernels" / "lm_head.py").open("a") as fh:
        fh.write("\n\ndef _training():\n    from alignment.training import trainer  # noqa: F401\n")
    with (tmp_path / "alignment" / "models" / "loading.py").open("a") as fh:
        fh.write("\n\ndef _training():\n    from alignment.training import objectives  # noqa: F401\n")
    with (tmp_path / "storage" / "checksums.py").open("a") as fh:
        fh.write("\n\ndef _tracking():\n    import mlflow  # noqa: F401\n\n\ndef _upwards():\n"
                 "    import alignment.config  # noqa: F401\n")
    proc = lint_imports("--no-cache", cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stdout.count(" BROKEN") == 6 and proc.stdout.count(" KEPT") == 0, proc.stdout[-4000:]
    assert ".training -> .stages" in proc.stdout and ".kernels -> .training" in proc.stdout
