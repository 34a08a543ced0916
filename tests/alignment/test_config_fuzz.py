"""Bad config input, generated: random YAML documents over the real schema, random bytes, random `--set`
overrides and CLI misuse. Each gives a valid PipelineConfig or one ConfigError naming the field path (or the
file), never another exception; the CLI answers misuse with argparse's usage (exit 2) and user errors with
one `error:` line (exit 2), never a traceback."""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from alignment.config import ConfigError, PipelineConfig, load_config
from flows.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def schema_paths(model: type[BaseModel] = PipelineConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every section and field path of the schema: ("run",), ("run", "seed"), ("dpo", "optim", "beta") ..."""
    paths = []
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        paths.append(path)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths += schema_paths(info.annotation, path)
    return paths


PATHS = schema_paths()


def render(part: Any) -> str:
    """A key as the error messages write it (alignment.config._field_path): names bare, odd ones quoted."""
    return str(part) if isinstance(part, int) or (isinstance(part, str) and part.isidentifier()) else repr(part)


def prefixes(path: tuple[Any, ...]) -> set[str]:
    return {".".join(render(p) for p in path[:i]) for i in range(1, len(path) + 1)}


# ---------------------------------------------------------------------------- strategies

names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
odd_keys = st.sampled_from(["", " ", "a b", "1", 1, 0.5, True, None, "run.seed", "ünï"])
texts = st.sampled_from(["", " ", "0", "-1", "1e999", "nan", "abc", "runs/x", "dpo", "[1]", "2020-13-45"]) | st.text(
    max_size=12)
numbers = (st.integers(-(10**30), 10**30) | st.sampled_from([0, -1, 1, 2**63, -(2**63), 10**400 // 10**350])
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf, 1e308]))
scalars = st.none() | st.booleans() | numbers | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(names | odd_keys, inner, max_size=3), max_leaves=8)


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, set[str]]:
    """A YAML-able document over the schema, and the dotted paths it touched (with their prefixes)."""
    if draw(st.integers(0, 9)) == 0:  # now and then a top level that is no mapping at all
        return draw(values.filter(lambda v: not isinstance(v, dict) and v is not None)), set()
    doc: dict[Any, Any] = {}
    touched: set[str] = set()
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(PATHS))
        if draw(st.booleans()):  # an unknown key at a real depth
            path = (*path[:draw(st.integers(0, len(path)))], draw(names | odd_keys))
        node = doc
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = draw(values)
            touched |= prefixes(path)
    return doc, touched


def problem_paths(message: str, source: str) -> list[str]:
    """The field paths named by an `invalid config (source): ...` message, one per problem."""
    head = f"invalid config ({source}): "
    assert message.startswith(head), message
    lines = message.splitlines()
    problems = [message[len(head):]] if len(lines) == 1 else [line.strip() for line in lines[1:]]
    assert lines[0].endswith("problems") or len(lines) == 1, message
    return [p.split(": ", 1)[0] for p in problems]


def names_a_touched_field(path: str, touched: set[str]) -> bool:
    return path == "(top level)" or any(path == t or path.startswith(t + ".") for t in touched)


def load_file(content: bytes) -> tuple[PipelineConfig | ConfigError, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "preset.yaml"
        path.write_bytes(content)
        try:
            return load_config(path), str(path)
        except ConfigError as err:
            return err, str(path)


# ---------------------------------------------------------------------------- (1) random documents


@FUZZ
@given(documents())
def test_random_documents_load_or_name_the_field(case: tuple[Any, set[str]]) -> None:
    doc, touched = case
    result, path = load_file(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))
    if isinstance(result, PipelineConfig):
        return
    message = str(result)
    assert path in message, message
    if not isinstance(doc, dict):
        assert "must hold a mapping" in message
        return
    for named in problem_paths(message, path):
        assert names_a_touched_field(named, touched), (named, touched, message)


@FUZZ
@given(st.sampled_from(PATHS), st.sampled_from([-1, -(10**12), 10**12, 2**63, math.nan, math.inf, -math.inf, "",
                                                 "abc", "1.5x", [], {}, [1, 2], {"x": 1}, True]))
def test_wrong_values_on_real_fields_name_the_field(path: tuple[str, ...], value: Any) -> None:
    """A bad value on any real field: an error whose only problem is that field (or a check naming it)."""
    doc: dict[str, Any] = {}
    node = doc
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    result, source = load_file(yaml.safe_dump(doc).encode())
    if isinstance(result, ConfigError):
        for named in problem_paths(str(result), source):
            assert names_a_touched_field(named, prefixes(path)), (named, path, str(result))


# ---------------------------------------------------------------------------- (2) bytes and broken YAML

PRESET = (CONFIGS / "quickstart.yaml").read_bytes()
garbage = st.sampled_from([b"\t", b"[", b"{", b"]", b"}", b": ", b"- ", b"\n", b"&a ", b"*a", b"!!int ", b"!!python/name:os ",
                           b"\xff", b"\xc3\x28", b"\x00", b"\xef\xbb\xbf", b"'", b'"', b"%YAML 1.1\n", b"---\n", b"?",
                           b"2020-13-45", b"9" * 4400, b"[" * 1200])


@st.composite
def broken_texts(draw: st.DrawFn) -> bytes:
    """A real preset with garbage spliced in at random places, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    content = PRESET
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(garbage) + content[at + draw(st.integers(0, 3)):]
    return content


@FUZZ
@given(broken_texts())
def test_broken_files_are_config_errors_naming_the_file(content: bytes) -> None:
    result, path = load_file(content)
    if isinstance(result, ConfigError):
        assert path in str(result), str(result)


@pytest.mark.parametrize(("content", "needle"), [
    (b"run:\n\tseed: 1\n", "not valid YAML (line 2"),
    (b"dpo: {beta: [0.1,\n", "not valid YAML (line 2"),
    (b"\xff\xfe\x00r\x00", "not UTF-8"),
    (b"run: {output_dir: \xc3\x28}\n", "not UTF-8"),
    (b"a\x00b: 1\n", "not valid YAML"),
    (b"- a\n- b\n", "must hold a mapping"),
    (b"42\n", "must hold a mapping"),
    (b"--- 1\n--- 2\n", "not valid YAML"),
    (b"run: {output_dir: 2020-13-45}\n", "quote it"),
    (b"run: {seed: !!int abc}\n", "cannot convert"),
    (b"dpo: {beta: " + b"9" * 5000 + b"}\n", "cannot convert"),
    (b"[" * 3000, "nested too deeply"),
    (b"!!python/object/apply:os.system [echo]\n", "not valid YAML"),
])
def test_known_broken_files(content: bytes, needle: str) -> None:
    result, path = load_file(content)
    assert isinstance(result, ConfigError)
    assert path in str(result) and needle in str(result), str(result)


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)


@pytest.mark.parametrize(("text", "needle"), [
    ("1: 2\n", "(top level): key 1 is not a name"),
    ("run: {true: 1}\n", "run: key True is not a name"),
    ("run: {'': 1}\n", "run.'': unknown key (expected one of: seed, torch_threads, output_dir, summary_dir)"),
    ("dpo: {optim: {lr: 1}}\n", "dpo.optim.lr: unknown key (expected one of: learning_rate,"),
    ("eval: {benchmarks: {tasks: [a, null]}}\n", "eval.benchmarks.tasks.1: Input should be a valid string"),
])
def test_messages_name_the_path(text: str, needle: str) -> None:
    result, _ = load_file(text.encode())
    assert isinstance(result, ConfigError) and needle in str(result), str(result)


def test_one_problem_is_one_line_and_long_inputs_are_cut() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["run.output_dir=[" + ", ".join(["x" * 20] * 50) + "]"])
    message = str(info.value)
    assert "\n" not in message and message.startswith("invalid config (defaults): run.output_dir: ")
    assert len(message) < 200 and message.endswith("…)")


# ---------------------------------------------------------------------------- (3) --set overrides

dotted = st.sampled_from([".".join(p) for p in PATHS])
override_keys = (dotted | dotted.map(lambda k: k + "." + "x") | dotted.map(lambda k: "x." + k)
                 | st.sampled_from(["", " ", ".", "run.", ".run", "run..seed", " run . seed ", "a b", "1", "run.seed.x.y"])
                 | st.text(max_size=10).filter(lambda k: "=" not in k))
override_values = st.sampled_from(["", " ", "0", "-1", "1e400", ".nan", ".inf", "-.inf", "[", "{", "]", "{a: 1}",
                                   "[1, 2]", "!!int x", "!!python/name:os.system", "2020-13-45", "2020-01-01",
                                   "null", "~", "true", "dpo", "orpo", "'quoted'", "9" * 4400, "[" * 1200]) | st.text(
    max_size=12)
overrides = (st.tuples(override_keys, override_values).map(lambda kv: f"{kv[0]}={kv[1]}")
             | st.text(max_size=12).filter(lambda s: "=" not in s))


def check_override_error(item: str, message: str) -> None:
    key, sep, _ = item.partition("=")
    if not sep or not key.strip():
        assert "--set expects KEY=VALUE" in message and repr(item) in message, message
        return
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        assert f"--set {key.strip()!r}: empty name between dots" in message, message
        return
    if message.startswith("--set "):
        assert key in message and "is a value, not a section" in message, message
        return
    for named in problem_paths(message, "defaults"):
        assert names_a_touched_field(named, prefixes(tuple(parts))), (named, parts, message)


@FUZZ
@given(overrides)
def test_random_overrides_apply_or_name_the_key(item: str) -> None:
    try:
        cfg = load_config(None, [item])
    except ConfigError as err:
        check_override_error(item, str(err))
    else:
        assert isinstance(cfg, PipelineConfig)


def test_unparseable_or_date_values_stay_text() -> None:
    cfg = load_config(None, ["run.output_dir=2020-13-45", "tracking.experiment=2020-01-01", "tracking.uri=["])
    assert (cfg.run.output_dir, cfg.tracking.experiment, cfg.tracking.uri) == ("2020-13-45", "2020-01-01", "[")


@pytest.mark.parametrize(("item", "needle"), [
    (".=1", "--set '.': empty name between dots"),
    ("run..seed=1", "--set 'run..seed': empty name between dots"),
    ("run.seed=!!int x", "run.seed: Input should be a valid integer"),
    (" run . seed =3", None),
])
def test_override_edge_cases(item: str, needle: str | None) -> None:
    if needle is None:
        assert load_config(None, [item]).run.seed == 3
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert needle in str(info.value), str(info.value)


# ---------------------------------------------------------------------------- (4) the CLI


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`alignflow ARGV` in process: (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


COMMANDS = ["run", "compare", "stack", "deploy", "promote", "bench", "data", "config"]


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["Run"], ["run", "--bogus"], ["run", "--set"], ["run", "--config"], ["stack"],
    ["stack", "explode"], ["stack", "up", "--prefect-port", "x"], ["promote"], ["promote", "m", "1"],
    ["data"], ["data", "inspect"], ["data", "prepare", "x"], ["compare", "--methods"], ["--version"],
    ["bench", "--steps", "many"], ["data", "inspect", "x", "--policy", "lenient"],
], ids=lambda a: " ".join(a) or "(none)")
def test_cli_misuse_is_usage_and_exit_2(argv: list[str]) -> None:
    code, _, err = run_cli(argv)
    assert code == 2 and "usage: alignflow" in err and "Traceback" not in err, err


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from([*COMMANDS, None]), st.text(st.characters(codec="ascii", exclude_characters="-="), min_size=1,
                                                    max_size=8))
def test_random_unknown_commands_and_flags_are_usage_errors(command: str | None, word: str) -> None:
    argv = [f"zz{word}"] if command is None else [command, f"--zz{word}"]
    code, _, err = run_cli(argv)
    assert code == 2 and "usage: alignflow" in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("argv", [
    ["config", "--config", "no/such/preset.yaml"],
    ["config", "--set", "dpo.beta=-1"],
    ["config", "--set", "dpo.betta=0.1"],
    ["config", "--set", "nokeyvalue"],
    ["run", "--no-stack", "--config", "no/such/preset.yaml"],
    ["run", "--no-stack", "--set", "run.seed=abc"],
    ["compare", "--no-stack", "--methods", "ppo"],
    ["compare", "--no-stack", "--betas", "x"],
    ["compare", "--no-stack", "--betas", "0"],
    ["deploy", "--set", "trainer.lr=1"],
    ["promote", "m", "1", "--reason", "r", "--config", "no/such/preset.yaml"],
], ids=lambda a: " ".join(a))
def test_cli_user_errors_are_one_error_line_and_exit_2(argv: list[str]) -> None:
    code, out, err = run_cli(argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@settings(FUZZ, max_examples=80)
@given(st.lists(overrides, min_size=1, max_size=3))
def test_cli_config_with_random_overrides(items: list[str]) -> None:
    """`alignflow config --set ...` prints the config (exit 0) or exactly the ConfigError, as `error:` (exit 2)."""
    argv = ["config", *(f"--set={item}" for item in items)]
    code, out, err = run_cli(argv)
    try:
        load_config(None, items)
    except ConfigError as expected:
        assert code == 2 and err == f"error: {expected}\n" and not out, (argv, err)
    else:
        assert code == 0 and out.startswith("{") and not err, (argv, err)
