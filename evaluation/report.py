"""Self-contained HTML reports: one pipeline run, or several variants (DPO vs ORPO vs beta) side by side.

Each report is a single HTML file: inline CSS, PNGs embedded as base64 data URIs, no scripts and nothing
fetched from elsewhere, so it opens from a mail attachment or an artifact store as it is.

This module works out what a page shows: numbers formatted, rows chosen, as text and a few typed pieces
(`Part`: a badge, a link, code). The Jinja2 templates in evaluation/templates/ lay them out: base.html
(the page chrome, for any alignflow page), macros.html (cells, tables, cards, figures), run_report.html
and compare_report.html. Autoescaping is on and nothing is marked safe, so every text that comes from a
run (prompts, answers, names, config values) is escaped where the page writes it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeAlias

from jinja2 import Environment, PackageLoader, StrictUndefined
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from markupsafe import Markup

LENGTH_BUCKETS = ("policy_shorter", "similar", "policy_longer")
LENGTH_STATS = ("count", "min", "mean", "p50", "p90", "p99", "max")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
LAYOUT_WHITESPACE = re.compile(r"\n\s*")


# ---------------------------------------------------------------------------- templates


class DropLayoutWhitespace(Extension):
    """Drops every line break in a .html template's own text, with the indentation after it, so that the
    templates can be laid out over lines and indented while the page comes out as compact as the reports
    always were. Only template text is touched, never a value (the config JSON keeps its line breaks);
    `{{ "\\n" }}` writes a line break into the page."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        layout = (stream.name or "").endswith(".html")
        for token in stream:
            if layout and token.type == "data":
                token = Token(token.lineno, token.type, LAYOUT_WHITESPACE.sub("", token.value))
            yield token


def escape_output(value: Any) -> Markup:
    """What every {{ value }} writes: html.escape of its text, quotes included (as `&quot;` and `&#x27;`,
    the entities the reports have always had; markupsafe would write `&#34;` and `&#39;`). A macro's output
    is already markup and passes unchanged; autoescape stays on underneath."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


@cache
def environment() -> Environment:
    """The Jinja2 environment of evaluation/templates/ (package data, so found from any directory)."""
    return Environment(loader=PackageLoader("evaluation", "templates"), autoescape=True,
                       undefined=StrictUndefined, finalize=escape_output, keep_trailing_newline=True,
                       extensions=[DropLayoutWhitespace])


def render_page(template: str, **context: Any) -> str:
    """Render one of evaluation/templates/; a page extending base.html needs `title`, `subtitle` and
    `sections`."""
    return environment().get_template(template).render(**context)


# ---------------------------------------------------------------------------- what the templates lay out


@dataclass(frozen=True)
class Part:
    """A piece of a cell that is more than text; macros.html's `cell` lays out each kind: a badge or a
    signed number (`css` its class), code, a link to `href` showing `text` as code with `title` as
    tooltip, strong or muted text, lines of text in a scrolling box (`text` a tuple of lines)."""

    kind: Literal["badge", "signed", "code", "link", "strong", "muted", "lines"]
    text: str | tuple[str, ...]
    css: str = ""
    href: str = ""
    title: str = ""


Cell: TypeAlias = "str | Part | tuple[str | Part, ...]"


@dataclass(frozen=True)
class Table:
    """Headers (text), rows of cells, the right-aligned columns, and one CSS class per row ("" for none)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    numeric: Collection[int] = ()
    row_classes: Sequence[str] | None = None


@dataclass(frozen=True)
class Card:
    label: str
    value: Cell
    extra: str = ""


@dataclass(frozen=True)
class Figure:
    """An embedded image (`src` a data URI), or, when the file is missing, its path."""

    title: str
    src: str | None
    missing: str = ""


@dataclass(frozen=True)
class Section:
    """One section of a page; `data` is what the page's macro for `anchor` lays out. A section whose data
    is empty is left out of the page and its table of contents."""

    anchor: str
    title: str
    data: Any


# ---------------------------------------------------------------------------- small formatting helpers


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to `digits` decimals (integers as they are), None as a dash, anything else as its text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def fmt_count(value: Any) -> str:
    """A count logged as a float (MLflow metrics are floats) shown as an integer."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(int(round(value)))
    return fmt(value)


def fmt_ci(low: Any, high: Any) -> str:
    return "—" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"


def fmt_delta(delta: Any) -> Cell:
    """A signed delta, green when positive and red when negative."""
    if not isinstance(delta, int | float) or isinstance(delta, bool) or not math.isfinite(delta):
        return fmt(delta)
    css = "pos" if delta > 0 else "neg" if delta < 0 else ""
    return Part("signed", f"{delta:+.3f}", css=css)


def tag(css: str, label: Any) -> Part:
    """A badge of class `css` (pass, fail, neutral, warn, best-badge)."""
    return Part("badge", str(label), css=css)


def badge(passed: bool | None, yes: str = "pass", no: str = "fail") -> Part:
    if passed is None:
        return tag("neutral", "n/a")
    return tag("pass", yes) if passed else tag("fail", no)


def code(text: Any) -> Part:
    return Part("code", str(text))


def spaced(parts: Iterable[str | Part]) -> tuple[str | Part, ...]:
    """The parts as one cell, a space between each two."""
    cell: list[str | Part] = []
    for part in parts:
        cell += [" ", part] if cell else [part]
    return tuple(cell)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- links and images


def run_url(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """The MLflow UI address of a run when tracking goes to an http(s) server; None otherwise."""
    if not tracking_uri or experiment_id is None or not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_cell(tracking_uri: str | None, experiment_id: str | None, run_id: str | None) -> Cell:
    """A link to the run (its id's first 8 characters, the full id as tooltip), or the bare id."""
    if not run_id:
        return "—"
    url = run_url(tracking_uri, experiment_id, str(run_id))
    if url is None:
        return code(run_id)
    return Part("link", str(run_id)[:8], href=url, title=str(run_id))


def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figures(images: Mapping[str, Path] | None) -> list[Figure]:
    """Each image as a titled figure, embedded; a missing file is named instead of breaking the report."""
    found = []
    for title, raw in (images or {}).items():
        if raw is None:
            continue
        path = Path(raw)
        found.append(Figure(str(title), data_uri(path)) if path.is_file()
                     else Figure(str(title), None, missing=str(path)))
    return found


# ---------------------------------------------------------------------------- pipeline report sections


def header_pairs(summary: Mapping[str, Any]) -> list[tuple[str, Cell]]:
    uri, exp_id = summary.get("tracking_uri"), summary.get("experiment_id")
    reg = summary.get("registered_model") or {}
    aliases = list(reg.get("aliases") or [])
    champion = reg.get("champion", summary.get("champion"))
    champion = "champion" in aliases if champion is None else bool(champion)
    alias_badges = spaced(tag("neutral", a) for a in aliases)
    pairs: list[tuple[str, Cell]] = [
        ("method", str(summary.get("method", "—"))),
        ("experiment", (str(summary.get("experiment", "—")), " ", Part("muted", f"(id {exp_id})"))),
        ("tracking", code(uri or "—")),
        ("parent run", run_cell(uri, exp_id, summary.get("parent_run_id"))),
        ("registered model", str(reg.get("name") or "—")),
        ("version", fmt(reg.get("version"))),
        ("aliases", alias_badges or "—"),
        ("champion", badge(champion, "yes", "no")),
    ]
    if reg.get("model_uri"):
        pairs.append(("model URI", code(reg["model_uri"])))
    if summary.get("output_dir"):
        pairs.append(("output folder", code(summary["output_dir"])))
    return pairs


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    metrics: Mapping[str, Any] = summary.get("metrics") or {}
    lc = summary.get("length_control") or {}
    gates = summary.get("gates") or []
    cards = []
    if "compare/win_rate" in metrics:
        cards.append(Card("win rate vs reference", fmt(metrics["compare/win_rate"]),
                          "95 % CI " + fmt_ci(metrics.get("compare/win_rate_ci_low"),
                                               metrics.get("compare/win_rate_ci_high"))))
    if "lc_win_rate" in lc:
        cards.append(Card("length-controlled win rate", fmt(lc["lc_win_rate"])))
    if "eval/rewards/accuracies" in metrics:
        cards.append(Card("held-out reward accuracy", fmt(metrics["eval/rewards/accuracies"])))
    if "eval/rewards/margins" in metrics:
        cards.append(Card("held-out reward margin", fmt(metrics["eval/rewards/margins"])))
    if gates:
        passed = all(g.get("passed") for g in gates)
        cards.append(Card("gates", badge(passed, "all passed", "failed"),
                          f"{sum(bool(g.get('passed')) for g in gates)} of {len(gates)} passed"))
    rows = [(str(name), fmt(value)) for name, value in metrics.items()]
    return {"cards": cards, "metrics": Table(["metric", "value"], rows, numeric=[1]) if rows else None}


def gates_view(gates: list[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    if not gates:
        return None
    rows = [(str(g.get("name", "?")), fmt(g.get("value")), fmt(g.get("threshold")), badge(g.get("passed")))
            for g in gates]
    overall = all(g.get("passed") for g in gates)
    return {"overall": badge(overall, "all gates passed", "a gate failed"),
            "table": Table(["gate", "value", "threshold", "passed"], rows, numeric=[1, 2])}


def verdict_counts(metrics: Mapping[str, Any], side_by_side: list[dict] | None) -> dict[str, Any]:
    """wins/ties/losses from the metrics when logged, else counted from the side-by-side rows."""
    counts = {k: metrics.get(f"compare/{k}") for k in ("wins", "ties", "losses")}
    if all(v is None for v in counts.values()) and side_by_side:
        seen = Counter(str(r.get("verdict")) for r in side_by_side)
        counts = {"wins": seen.get("win", 0), "ties": seen.get("tie", 0), "losses": seen.get("loss", 0)}
    return counts


def length_rows(lc: Mapping[str, Any]) -> list[tuple[str, ...]]:
    buckets = [b for b in LENGTH_BUCKETS if any(k.startswith(f"length/{b}/") for k in lc)]
    buckets += sorted({k.split("/")[1] for k in lc if k.startswith("length/") and k.count("/") >= 2}
                      - set(buckets))
    return [(b.replace("_", " "), fmt_count(lc.get(f"length/{b}/n")), fmt(lc.get(f"length/{b}/win_rate")),
             fmt_ci(lc.get(f"length/{b}/win_rate_ci_low"), lc.get(f"length/{b}/win_rate_ci_high")))
            for b in buckets]


def comparison(summary: Mapping[str, Any], side_by_side: list[dict] | None) -> dict[str, Any] | None:
    metrics: Mapping[str, Any] = summary.get("metrics") or {}
    lc: Mapping[str, Any] = summary.get("length_control") or {}
    judge: Mapping[str, Any] = summary.get("judge") or {}
    if "compare/win_rate" not in metrics and not lc and not judge and not side_by_side:
        return None
    counts = verdict_counts(metrics, side_by_side)
    pairs: list[tuple[str, Cell]] = [
        ("wins / ties / losses", " / ".join(fmt_count(counts[k]) for k in ("wins", "ties", "losses"))),
        ("win rate (ties count half)", fmt(metrics.get("compare/win_rate"))),
        ("95 % CI (Wilson)", fmt_ci(metrics.get("compare/win_rate_ci_low"), metrics.get("compare/win_rate_ci_high")))]
    for key, label in (("compare/policy_mean_score", "policy mean score"),
                       ("compare/reference_mean_score", "reference mean score")):
        if key in metrics:
            pairs.append((label, fmt(metrics[key])))
    if judge:
        errors = judge.get("errors")
        pairs.append(("judge", str(judge.get("kind", "—"))))
        pairs.append(("judge errors", (fmt_count(errors), " ", badge(False, no="errors")) if errors
                      else fmt_count(errors)))
    rows = length_rows(lc)
    return {"pairs": pairs, "length_view": bool(rows) or "lc_win_rate" in lc,
            "lc_win_rate": fmt(lc["lc_win_rate"]) if "lc_win_rate" in lc else None,
            "lengths": Table(["policy answer vs reference", "n", "win rate", "95 % CI"], rows, numeric=[1, 2, 3])
            if rows else None}


def verdict_badge(verdict: Any) -> Part:
    return tag({"win": "pass", "loss": "fail", "tie": "neutral"}.get(str(verdict), "warn"), verdict)


def side_by_side_view(rows: list[dict] | None, max_rows: int) -> dict[str, Any] | None:
    if not rows:
        return None
    shown = rows[:max(0, max_rows)]
    cells = [tuple(Part("lines", (str(r.get(k, "")),)) for k in ("prompt", "reference", "policy"))
             + (verdict_badge(r.get("verdict", "?")),) for r in shown]
    return {"shown": len(shown), "total": len(rows),
            "table": Table(["prompt", "reference answer", "policy answer", "verdict"], cells)}


QUALITY_ROWS = (("passed_and_answered_rate", "follows the instruction and answers"),
                ("answered_rate", "answers (not degenerate; right where checkable)"),
                ("correct_rate", "right answer (checkable questions)"), ("degenerate_rate", "degenerate"),
                ("empty_rate", "empty"), ("echo_rate", "echo of the prompt"), ("loop_rate", "loop"),
                ("too_short_rate", "too short to answer"), ("distinct_2", "distinct word bigrams"),
                ("median_words", "median words (no length instruction)"))


def quality_table(quality: Mapping[str, Any] | None) -> Table | None:
    """The held-out answers' quality (evaluation/quality.py) of policy and reference, with the difference;
    then the length ratio and the KL estimate."""
    if not quality:
        return None
    policy, reference = quality.get("policy") or {}, quality.get("reference") or {}
    rows: list[tuple[Cell, ...]] = [(label, fmt(policy.get(k)), fmt(reference.get(k)),
                                     fmt_delta(difference(policy.get(k), reference.get(k))))
                                    for k, label in QUALITY_ROWS if k in policy or k in reference]
    for key, label in (("length_ratio", "length ratio (policy / reference median)"),
                       ("kl", "KL(policy || reference), nats per answer")):
        if quality.get(key) is not None:
            rows.append((label, fmt(quality[key]), "", ""))
    return Table(["measure", "policy", "reference", "difference"], rows, numeric=[1, 2, 3]) if rows else None


def flagged_view(rows: list[dict] | None, max_rows: int) -> dict[str, Any] | None:
    """Held-out prompts where either answer has a degeneration flag or is wrong, both answers side by side."""
    def bad(r: dict, role: str) -> bool:
        return bool(r.get(f"{role}_flags")) or r.get(f"{role}_correct") == "no"

    hits = [r for r in rows or [] if bad(r, "policy") or bad(r, "reference")]
    if not hits:
        return None
    shown = hits[:max(0, max_rows)]

    def note(r: dict, role: str) -> str:
        parts = [r.get(f"{role}_flags") or ""] + (["wrong"] if r.get(f"{role}_correct") == "no" else [])
        return ", ".join(p for p in parts if p) or "—"

    cells = [(Part("lines", (str(r.get("prompt", "")),)), Part("lines", (str(r.get("reference", "")),)),
              note(r, "reference"), Part("lines", (str(r.get("policy", "")),)), note(r, "policy"))
             for r in shown]
    return {"shown": len(shown), "flagged": len(hits), "total": len(rows or []),
            "table": Table(["prompt", "reference answer", "reference flags", "policy answer", "policy flags"],
                           cells)}


MAIN_TAG = (" ", tag("neutral", "main"))


def benchmark_rows(bench: Mapping[str, Any]) -> list[tuple[Cell, ...]]:
    """(task, metric, policy, reference, delta) per task and numeric metric; the main metric first and
    tagged. A task known only from "main" gets one row with metric "main"."""
    policy, reference = bench.get("policy") or {}, bench.get("reference") or {}
    main = bench.get("main") or {}
    rows: list[tuple[Cell, ...]] = []
    for task in sorted(set(policy) | set(reference) | set(main)):
        pol, ref, head = policy.get(task) or {}, reference.get(task) or {}, main.get(task) or {}
        main_metric = head.get("metric") or next(
            (m for m, v in pol.items() if is_number(v) and "policy" in head and v == head["policy"]), None)
        metrics = [m for m in dict.fromkeys([*pol, *ref]) if is_number(pol.get(m)) or is_number(ref.get(m))]
        if main_metric in metrics:
            metrics.remove(main_metric)
            metrics.insert(0, main_metric)
        if head and main_metric not in metrics:
            rows.append((str(task), (str(main_metric or "main"), *MAIN_TAG),
                         fmt(head.get("policy")), fmt(head.get("reference")),
                         fmt_delta(head.get("delta", difference(head.get("policy"), head.get("reference"))))))
        for m in metrics:
            p, r = pol.get(m), ref.get(m)
            rows.append((str(task), (str(m), *MAIN_TAG) if m == main_metric else str(m), fmt(p), fmt(r),
                         fmt_delta(difference(p, r))))
    return rows


def difference(a: Any, b: Any) -> float | None:
    return float(a) - float(b) if is_number(a) and is_number(b) else None


def benchmarks_table(bench: Mapping[str, Any] | None) -> Table | None:
    rows = benchmark_rows(bench or {})
    if not rows:
        return None
    return Table(["task", "metric", "policy", "reference", "delta"], rows, numeric=[2, 3, 4])


def contamination_table(contamination: Mapping[str, Any] | None) -> Table | None:
    if not contamination:
        return None
    rows = []
    for name, share in contamination.items():
        status = (tag("pass", "clean") if is_number(share) and share == 0
                  else tag("warn", "overlap") if is_number(share) else badge(None))
        rows.append((str(name), fmt(share), status))
    return Table(["evaluation set", "share contaminated", "status"], rows, numeric=[1])


def drops_view(title: str, drops: Mapping[str, Any], sources: Mapping[str, Any]) -> dict[str, Any] | None:
    """Rows read/kept/dropped per split, then each drop reason with its examples."""
    if not drops:
        return None
    rows, reasons = [], []
    for split, info in drops.items():
        formats = ", ".join(f"{f} ({fm})" for f, fm in (info.get("formats") or {}).items())
        rows.append((str(split), str(sources.get(split) or "—"), formats or "—", fmt_count(info.get("rows_read")),
                     fmt_count(info.get("rows_kept")), fmt_count(info.get("rows_dropped"))))
        for reason, count in (info.get("counts") or {}).items():
            examples = tuple(
                f"{e.get('file', '?')} row {e.get('row', '?')}"
                + (f", field '{e['field']}'" if e.get("field") else "") + f": {e.get('message', '')}"
                for e in (info.get("examples") or {}).get(reason, []))
            reasons.append((str(split), str(reason), fmt_count(count), Part("lines", examples or ("—",))))
    return {"title": title,
            "splits": Table(["split", "source", "format", "read", "kept", "dropped"], rows, numeric=[3, 4, 5]),
            "reasons": Table(["split", "drop reason", "rows", "examples"], reasons, numeric=[2]) if reasons else None}


def data_view(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The prepare stage's report.json: rows per split, drops by reason, length statistics."""
    if not report:
        return None
    counts = report.get("counts") or {}
    drops = [drops_view("Rows read, kept and dropped", report.get("drops") or {}, report.get("sources") or {})]
    tokenized = (report.get("tokenized") or {}).get("drops") or {}
    if any((info or {}).get("rows_dropped") for info in tokenized.values()):
        drops.append(drops_view("Dropped after tokenization", tokenized, {}))
    lengths = {k: v for k, v in (report.get("lengths") or {}).items() if v}
    rows = [(str(name), *(fmt_count(s.get("count")) if k == "count" else fmt(s.get(k), 1) for k in LENGTH_STATS))
            for name, s in lengths.items()]
    view = {
        "counts": Table(["split", "rows"], [(str(k), fmt_count(v)) for k, v in counts.items()], numeric=[1])
        if counts else None,
        "drops": [d for d in drops if d],
        "length_unit": str(report.get("length_unit", "characters")),
        "lengths": Table(["field", *LENGTH_STATS], rows, numeric=range(1, len(LENGTH_STATS) + 1)) if rows else None,
        "fingerprint": str(report["fingerprint"]) if report.get("fingerprint") else None,
    }
    return view if view["counts"] or view["drops"] or view["lengths"] or view["fingerprint"] else None


def config_text(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2, default=str, ensure_ascii=False)


def runs_table(summary: Mapping[str, Any]) -> Table | None:
    uri, exp_id = summary.get("tracking_uri"), summary.get("experiment_id")
    rows: list[tuple[str, Cell]] = []
    if summary.get("parent_run_id"):
        rows.append(("pipeline (parent)", run_cell(uri, exp_id, summary["parent_run_id"])))
    rows += [(str(stage), run_cell(uri, exp_id, rid)) for stage, rid in (summary.get("stage_runs") or {}).items()]
    if not rows:
        return None
    return Table(["stage", "MLflow run"], rows)


def present(sections: Iterable[Section]) -> list[Section]:
    return [s for s in sections if s.data]


# ---------------------------------------------------------------------------- the reports


def render_pipeline_report(summary: dict, *, config: dict, data_report: dict | None = None,
                           images: dict[str, Path] | None = None, side_by_side: list[dict] | None = None,
                           max_rows: int = 50) -> str:
    """One pipeline run as a self-contained HTML page.

    `summary` is the run's summary.json (tasks/summary.py), optionally extended with "benchmarks",
    "contamination", "length_control" and "judge"; every section whose input is missing is left out.
    `data_report` is the prepare stage's report.json, `side_by_side` the comparison's rows (prompt,
    reference, policy, verdict; the first `max_rows` are shown), `images` titled PNGs to embed.
    """
    method = summary.get("method", "?")
    subtitle = ("experiment ", str(summary.get("experiment", "—")), " · parent run ",
                run_cell(summary.get("tracking_uri"), summary.get("experiment_id"), summary.get("parent_run_id")))
    sections = [
        Section("run", "Run", header_pairs(summary)),
        Section("headline", "Headline metrics", headline(summary)),
        Section("gates", "Promotion gates", gates_view(summary.get("gates"))),
        Section("comparison", "Policy vs reference", comparison(summary, side_by_side)),
        Section("quality", "What a user sees: answers beside the reference's", quality_table(summary.get("quality"))),
        Section("flagged", "Flagged answers, side by side", flagged_view(side_by_side, max_rows)),
        Section("side-by-side", "Side by side", side_by_side_view(side_by_side, max_rows)),
        Section("benchmarks", "Benchmarks", benchmarks_table(summary.get("benchmarks"))),
        Section("contamination", "Contamination", contamination_table(summary.get("contamination"))),
        Section("data", "Data", data_view(data_report)),
        Section("plots", "Plots", figures(images)),
        Section("config", "Configuration", config_text(config)),
        Section("mlflow", "MLflow runs", runs_table(summary)),
    ]
    return render_page("run_report.html", title=f"alignflow pipeline report — {method}", subtitle=subtitle,
                       sections=present(sections))


def compact_params(params: Mapping[str, Any] | None, prefix: str = "") -> str:
    """{"beta": 0.1, "optim": {"lr": 1e-6}} -> "beta=0.1, optim.lr=1e-06"."""
    parts = []
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            inner = compact_params(value, f"{prefix}{key}.")
            parts += [inner] if inner else []
        else:
            parts.append(f"{prefix}{key}={value:g}" if is_number(value) else f"{prefix}{key}={value}")
    return ", ".join(parts)


def fmt_seconds(value: Any) -> str:
    if not is_number(value) or not math.isfinite(value):
        return fmt(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def render_comparison_report(rows: list[dict], *, title: str, images: dict[str, Path] | None = None,
                             tracking_uri: str | None = None, experiment_id: str | None = None) -> str:
    """Variants (DPO vs ORPO, beta sweeps) side by side: one table row per variant with its win rate and
    interval, reward accuracy, length-controlled win rate, one column per benchmark task, gates, training
    time and a link to its parent run; the best variant is highlighted and badged."""
    tasks = sorted({t for r in rows for t in (r.get("benchmarks") or {})})
    headers = ["variant", "method", "params", "win rate", "95 % CI", "reward acc.", "LC win rate", *tasks,
               "gates", "train time", "parent run"]
    cells, classes = [], []
    for r in rows:
        best = bool(r.get("best"))
        bench = r.get("benchmarks") or {}
        name = (Part("strong", str(r.get("variant", "?"))), *((tag("best-badge", "best"),) if best else ()))
        gates = r.get("gates_passed")
        cells.append((name, str(r.get("method", "—")), code(compact_params(r.get("params")) or "—"),
                      fmt(r.get("win_rate")), fmt_ci(r.get("win_rate_ci_low"), r.get("win_rate_ci_high")),
                      fmt(r.get("reward_accuracy")), fmt(r.get("lc_win_rate")), *(fmt(bench.get(t)) for t in tasks),
                      badge(None if gates is None else bool(gates)), fmt_seconds(r.get("train_seconds")),
                      run_cell(tracking_uri, experiment_id, r.get("parent_run_id"))))
        classes.append("best" if best else "")
    numeric = [3, 4, 5, 6, *range(7, 7 + len(tasks)), 8 + len(tasks)]
    best_rows = [r for r in rows if r.get("best")]
    subtitle: list[str | Part] = [f"{len(rows)} variant{'s' if len(rows) != 1 else ''}"]
    if best_rows:
        subtitle += [" · best: ", Part("strong", str(best_rows[0].get("variant", "?")))]
    if tracking_uri:
        subtitle += [" · tracking ", code(tracking_uri)]
    sections = [
        Section("variants", "Variants",
                {"table": Table(headers, cells, numeric=numeric, row_classes=classes) if rows else None}),
        Section("plots", "Plots", figures(images)),
    ]
    return render_page("compare_report.html", title=title, subtitle=tuple(subtitle), sections=present(sections))


def write_report(html: str, path: Path) -> Path:
    """Write the report atomically (a temporary file beside it, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
