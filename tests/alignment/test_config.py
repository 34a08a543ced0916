"""Typed config: presets load, `--set` overrides parse as YAML scalars, and every bad input is a ConfigError
naming the field and the constraint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignment.config import ConfigError, PipelineConfig, apply_override, config_to_params, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("*.yml"))


def test_there_are_presets() -> None:
    assert any(p.name == "quickstart.yaml" for p in PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads(path: Path) -> None:
    """The preset validates, and every value it sets is the value the config holds."""
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    dumped = cfg.model_dump()

    def check(raw: dict, held: dict, where: str) -> None:
        for key, value in raw.items():
            if isinstance(value, dict):
                check(value, held[key], f"{where}{key}.")
            else:
                assert held[key] == value, f"{path.name}: {where}{key}"

    check(yaml.safe_load(path.read_text()) or {}, dumped, "")


def test_defaults_without_a_file() -> None:
    assert load_config() == PipelineConfig()


def test_overrides_parse_yaml_scalars() -> None:
    cfg = load_config(CONFIGS / "quickstart.yaml", [
        "dpo.beta=0.25",  # float
        "run.seed=7",  # int
        "preference.method=orpo", "sft.enabled=false",  # string, bool
        "model.name_or_path=null",  # None
        "eval.max_prompts=~",
        "run.output_dir=runs/exp-1",
        "dpo.optim.learning_rate=1e-4",  # YAML 1.1 reads this as a string; pydantic coerces it
        "dpo.optim.max_steps= 12",
    ])
    assert cfg.dpo.beta == 0.25 and isinstance(cfg.dpo.beta, float)
    assert cfg.run.seed == 7
    assert cfg.preference.method == "orpo" and cfg.sft.enabled is False
    assert cfg.model.name_or_path is None and cfg.eval.max_prompts is None
    assert cfg.run.output_dir == "runs/exp-1"
    assert cfg.dpo.optim.learning_rate == pytest.approx(1e-4)
    assert cfg.dpo.optim.max_steps == 12


def test_later_override_wins_and_others_keep_defaults() -> None:
    cfg = load_config(None, ["dpo.beta=0.2", "dpo.beta=0.3"])
    assert cfg.dpo.beta == 0.3
    assert cfg.dpo.optim.learning_rate == PipelineConfig().dpo.optim.learning_rate


def test_apply_override_builds_nested_sections() -> None:
    raw: dict = {"dpo": {"beta": 0.1}}
    apply_override(raw, "dpo.optim.batch_size=8")
    apply_override(raw, "run.output_dir=")
    assert raw == {"dpo": {"beta": 0.1, "optim": {"batch_size": 8}}, "run": {"output_dir": ""}}


def check_error(overrides: list[str], *needles: str, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def test_negative_learning_rate_names_field_and_bound() -> None:
    check_error(["dpo.optim.learning_rate=-1"], "dpo.optim.learning_rate", "greater than 0", "-1")


def test_unknown_key_is_refused() -> None:
    check_error(["dpo.betta=0.1"], "dpo.betta", "unknown key")


def test_unknown_section_is_refused() -> None:
    check_error(["trainer.lr=0.1"], "trainer", "unknown key")


def test_a_renamed_key_names_its_replacement() -> None:
    check_error(["onpolicy.scorer=verifier"], "onpolicy.scorer: unknown key", "it became onpolicy.scorers")


def test_wrong_type_names_field_and_type() -> None:
    check_error(["run.seed=abc"], "run.seed", "valid integer", "'abc'")


def test_wrong_literal_lists_choices() -> None:
    check_error(["preference.method=ppo"], "preference.method", "'dpo'", "'orpo'")


def test_dpo_without_sft_uses_the_base_model_as_reference() -> None:
    """An instruct model needs no SFT stage: DPO then starts from, and is anchored to, the base model."""
    cfg = load_config(None, ["preference.method=dpo", "sft.enabled=false"])
    assert cfg.preference.method == "dpo" and not cfg.sft.enabled


def test_instruction_task_needs_the_onpolicy_stage_and_no_sft() -> None:
    check_error(["data.source=instructions", "sft.enabled=false"], "data.source=instructions", "onpolicy.enabled")
    check_error(["data.source=instructions", "onpolicy.enabled=true"], "data.source=instructions",
                "sft.enabled=false")
    check_error(["data.instructions.kinds=[haiku]"], "haiku", "word_limit")


def test_cross_field_constraints_name_their_fields() -> None:
    check_error(["model.tiny.num_heads=3"], "model.tiny", "divisible by num_heads")
    check_error(["data.quick.good_fraction=0.5"], "data.quick", "good_fraction + refusal_fraction")
    check_error(["data.source=files"], "data.source=files", "data.train_path")


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("dpo:\n  beta: -0.5\n")
    check_error([], str(path), "dpo.beta", "greater than 0", path=path)


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  seed: 1\ndpo:\n  beta: [0.1,\n")
    message = check_error([], str(path), "not valid YAML", path=path)
    assert "line " in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    check_error([], "must hold a mapping", path=path)


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == PipelineConfig()


def test_missing_file(tmp_path: Path) -> None:
    check_error([], "not found", str(tmp_path / "nope.yaml"), path=tmp_path / "nope.yaml")


@pytest.mark.parametrize("item", ["dpo.beta", "=0.2", " =1"])
def test_set_without_key_value_is_refused(item: str) -> None:
    check_error([item], "KEY=VALUE", repr(item))


def test_set_into_a_value_is_refused() -> None:
    raw = {"run": {"seed": 1}}
    with pytest.raises(ConfigError, match="'seed' is a value, not a section"):
        apply_override(raw, "run.seed.x=1")


def test_numeric_looking_value_for_a_string_field() -> None:
    cfg = load_config(None, ["run.output_dir=2024", "promotion.model_name=1.0"])
    assert cfg.run.output_dir == "2024" and cfg.promotion.model_name == "1.0"


def test_quoted_numeric_string_works() -> None:
    assert load_config(None, ['run.output_dir="2024"']).run.output_dir == "2024"


def test_validate_assignment() -> None:
    cfg = PipelineConfig()
    with pytest.raises(ValueError, match="greater than 0"):
        cfg.dpo.beta = 0.0


def test_config_to_params_flattens_every_field() -> None:
    cfg = load_config(None, ["dpo.beta=0.25", "dpo.optim.learning_rate=0.0002"])
    params = config_to_params(cfg)
    assert params["dpo.beta"] == "0.25"
    assert params["dpo.optim.learning_rate"] == "0.0002"
    assert params["model.name_or_path"] == "None"
    assert all(isinstance(v, str) for v in params.values())
