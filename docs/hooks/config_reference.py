"""MkDocs hook: the configuration reference, rendered from `alignment.config.PipelineConfig`.

docs/configuration.md holds the marker `<!-- config-reference -->`; at build time it is replaced by one
section per config section, each a table of its fields (path, type, default, constraints, description),
walked from the pydantic models themselves, so the page cannot drift from the code. Nothing here knows
which sections exist: a new section or field appears on the next build.

`render_config_reference()` is plain Python (tests/test_docs.py calls it); `on_page_markdown` is the
MkDocs hook (mkdocs.yml: `hooks: [docs/hooks/config_reference.py]`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

MARKER = "<!-- config-reference -->"
PAGE = "configuration.md"
ROOT = Path(__file__).resolve().parents[2]

# (attribute on a field's metadata object, how the constraint reads)
_CONSTRAINTS = (
    ("gt", "> {}"), ("ge", "≥ {}"), ("lt", "< {}"), ("le", "≤ {}"), ("multiple_of", "multiple of {}"),
    ("min_length", "length ≥ {}"), ("max_length", "length ≤ {}"), ("pattern", "matches `{}`"),
)


def render_config_reference(model: type[BaseModel] | None = None) -> str:
    """Markdown for every field of `model` (default: `PipelineConfig`), one section per nested model."""
    model = model or _pipeline_config()
    blocks: list[str] = []
    _render_section(blocks, model, model(), path="", level=2)
    return "\n\n".join(blocks) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **_: Any) -> str:
    """MkDocs hook: replace the marker on the configuration page with the rendered reference."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}: the config reference has nowhere to go")
    return markdown.replace(MARKER, render_config_reference(_pipeline_config(reload=True)))


def _pipeline_config(reload: bool = False) -> type[BaseModel]:
    """`PipelineConfig`, importable from a checkout that is not installed; reloaded for `mkdocs serve`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    module = importlib.import_module("alignment.config")
    if reload:
        module = importlib.reload(module)
    return module.PipelineConfig


def _render_section(blocks: list[str], model: type[BaseModel], instance: BaseModel | None, path: str,
                    level: int) -> None:
    """Append the heading, docstring and field table of one section, then its nested sections."""
    if path:
        blocks.append(f"{'#' * min(level, 6)} `{path}` {{ #{_anchor(path)} }}")
        if instance is None:
            blocks.append("Unset by default (`null`); setting any field below turns it on, with these defaults.")
    doc = model.__dict__.get("__doc__")
    if doc:
        blocks.append(" ".join(inspect.cleandoc(doc).split()))
    rows = ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel], BaseModel | None]] = []
    for name, field in model.model_fields.items():
        field_path = f"{path}.{name}" if path else name
        default = _default(field, instance, name)
        sub = _nested_model(field.annotation)
        if sub is not None:
            nested.append((field_path, sub, default if isinstance(default, BaseModel) else None))
            if not path:
                continue  # a top-level section: its own heading says it all
        cells = [
            f"`{field_path}`",
            _describe_type(field.annotation, link=field_path if sub is not None else None),
            "section" if isinstance(default, BaseModel) else f"`{_format_value(default)}`",
            _constraints(field),
            " ".join((field.description or "").split()),
        ]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if len(rows) > 2:
        blocks.append("\n".join(rows))
    for field_path, sub, sub_instance in nested:
        _render_section(blocks, sub, sub_instance, field_path, level + (1 if path else 0))


def _default(field: FieldInfo, instance: BaseModel | None, name: str) -> Any:
    """The value inside the enclosing default (so sft.optim shows SFT's values), else the field's default."""
    if instance is not None:
        return getattr(instance, name)
    if field.is_required():
        return _REQUIRED
    return field.get_default(call_default_factory=True)


class _Required:
    def __repr__(self) -> str:
        return "required"


_REQUIRED = _Required()


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a `Model` or `Model | None` annotation, else None (a leaf field)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _describe_type(annotation: Any, link: str | None = None) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "`null`"
    if origin is Literal:
        return " or ".join(f"`{_format_value(arg)}`" for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe_type(arg, link) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[section](#{_anchor(link)})" if link else "section"
    if origin is not None:
        return f"`{_plain_type(annotation)}`"
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _plain_type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is None:
        return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_plain_type(arg) for arg in args)
    return f"{getattr(origin, '__name__', origin)}[{', '.join(_plain_type(arg) for arg in args)}]"


def _constraints(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        for attr, text in _CONSTRAINTS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(text.format(_format_value(value)))
        if getattr(item, "strict", None):
            parts.append("strict type (no coercion)")
    return ", ".join(parts)


def _format_value(value: Any) -> str:
    """A value as it would be written in a YAML preset."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_format_value(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _anchor(path: str) -> str:
    return "config-" + path.replace(".", "-").replace("_", "-")
