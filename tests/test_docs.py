"""The documentation site: the generated configuration reference covers every config field, and the strict
MkDocs build (broken links and anchors, pages missing from nav are errors) passes."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from alignment.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "config_reference.py"


def load_hook() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for m in map(model_in, get_args(annotation)) if m is not None), None)
    return None


def field_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every field path of `model`, nested sections (also `Section | None` ones) included."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        sub = model_in(field.annotation)
        if sub is not None:
            yield from field_paths(sub, f"{path}.")


def test_reference_names_every_field_path() -> None:
    text = load_hook().render_config_reference()
    paths = list(field_paths(PipelineConfig))
    assert len(paths) > 50  # the walk itself found the nested sections
    missing = [path for path in paths if f"`{path}`" not in text]
    assert not missing, f"config reference lacks {missing}"


def test_reference_shows_defaults_of_the_enclosing_section() -> None:
    """sft.optim is OptimConfig(learning_rate=2e-3, ...) inside SFTConfig: the page shows SFT's value."""
    text = load_hook().render_config_reference()
    row = next(line for line in text.splitlines() if line.startswith("| `sft.optim.learning_rate` "))
    assert "`0.002`" in row
    row = next(line for line in text.splitlines() if line.startswith("| `run.seed` "))
    assert "≥ 0" in row and "`0`" in row


def test_reference_walks_fields_it_was_never_told_about() -> None:
    """A new section or field appears without touching the generator."""

    class Extra(BaseModel):
        """A section added later."""

        knob: int = 3

    class Config(BaseModel):
        extra: Extra | None = None
        flag: bool = True

    text = load_hook().render_config_reference(Config)
    assert "`extra.knob`" in text and "`flag`" in text and "A section added later." in text


@pytest.mark.slow
def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (the `docs` extra)")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (tmp_path / "site" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert load_hook().MARKER not in page and "training.lora.r" in page


SET_EXAMPLE = re.compile(r"--set ([\"']?)((?:[A-Za-z_]+\.)+[A-Za-z_]+=[^\s\"'`)]*)\1")


def documented_set_examples() -> list[tuple[str, str]]:
    """(file, KEY=VALUE) of every `--set` example in README, the docs, the Makefile and the presets."""
    found = []
    for path in [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "configs").glob("*.yaml"))]:
        for match in SET_EXAMPLE.finditer(path.read_text(encoding="utf-8")):
            if not match.group(2).startswith("section.field="):  # the syntax's own placeholder
                found.append((path.name, match.group(2)))
    return found


def test_every_documented_set_example_names_a_real_key() -> None:
    """Each documented `--set KEY=VALUE` applied to the defaults gives no "unknown key" (a value may still need
    its neighbours, e.g. eval.judge.kind=endpoint needs the endpoint URL, so only the key is checked here)."""
    from alignment.config import ConfigError, load_config

    examples = documented_set_examples()
    assert len(examples) >= 10 and ("README.md", "preference.method=orpo") in examples
    for where, item in examples:
        try:
            load_config(None, [item])
        except ConfigError as err:
            assert "unknown key" not in str(err), (where, item, str(err))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["preference.beta=0.2"])  # what the config's docstring used to teach
