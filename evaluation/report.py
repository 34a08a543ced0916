"""Self-contained HTML reports: one pipeline run, or several variants (DPO vs ORPO vs beta) side by side.

Each report is a single HTML file: inline CSS, PNGs embedded as base64 data URIs, no scripts and nothing
fetched from elsewhere, so it opens from a mail attachment or an artifact store as it is. Every text that
comes from a run (prompts, answers, names, config values) is escaped with html.escape.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LENGTH_BUCKETS = ("policy_shorter", "similar", "policy_longer")
LENGTH_STATS = ("count", "min", "mean", "p50", "p90", "p99", "max")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}

CSS = """
:root { --fg:#1f2933; --muted:#627d98; --line:#d9e2ec; --bg:#f5f7fa; --card:#ffffff;
        --pass:#1b7f4b; --pass-bg:#e3f9e5; --fail:#b42318; --fail-bg:#fde8e8; --warn:#8a5a00; --warn-bg:#fff4d6;
        --accent:#264653; --best-bg:#fffbea; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:14px/1.5 -apple-system, BlinkMacSystemFont,
       "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 20px 60px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:0 0 12px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:16px 0 8px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:16px 18px;
          margin:16px 0; }
.subtitle { color:var(--muted); margin:0 0 12px; }
nav { font-size:13px; margin:8px 0 0; }
nav a { margin-right:12px; color:var(--accent); }
a { color:#1d4ed8; }
table { border-collapse:collapse; width:100%; margin:6px 0 4px; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f4f8; font-weight:600; color:#334e68; white-space:nowrap; }
tbody tr:nth-child(even) { background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.kv th { width:220px; }
tr.best td { background:var(--best-bg); }
.text { white-space:pre-wrap; word-break:break-word; max-height:14em; overflow:auto; min-width:12em; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600;
         line-height:18px; white-space:nowrap; }
.pass { background:var(--pass-bg); color:var(--pass); }
.fail { background:var(--fail-bg); color:var(--fail); }
.neutral { background:#e4e7eb; color:#3e4c59; }
.warn { background:var(--warn-bg); color:var(--warn); }
.best-badge { background:#f7c948; color:#513c06; margin-left:6px; }
.pos { color:var(--pass); } .neg { color:var(--fail); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:4px 0 12px; }
.card { flex:1 1 170px; border:1px solid var(--line); border-radius:8px; padding:10px 12px; background:#fbfcfd; }
.card .label { color:var(--muted); font-size:12px; }
.card .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .extra { color:var(--muted); font-size:12px; }
figure { margin:12px 0 20px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; background:#fff; }
figcaption { font-weight:600; margin-bottom:6px; }
details summary { cursor:pointer; color:var(--accent); font-weight:600; }
pre { background:#f0f4f8; padding:12px; border-radius:6px; overflow:auto; font-size:12px; }
code { font-family: SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
.muted { color:var(--muted); }
"""


# ---------------------------------------------------------------------------- small formatting helpers


def esc(value: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to `digits` decimals (integers as they are), None as a dash, anything else escaped."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else esc(value)
    return esc(value)


def fmt_count(value: Any) -> str:
    """A count logged as a float (MLflow metrics are floats) shown as an integer."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(int(round(value)))
    return fmt(value)


def fmt_ci(low: Any, high: Any) -> str:
    return "—" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"


def fmt_delta(delta: Any) -> str:
    """A signed delta, green when positive and red when negative."""
    if not isinstance(delta, int | float) or isinstance(delta, bool) or not math.isfinite(delta):
        return fmt(delta)
    css = "pos" if delta > 0 else "neg" if delta < 0 else ""
    return f'<span class="{css}">{delta:+.3f}</span>'


def badge(passed: bool | None, yes: str = "pass", no: str = "fail") -> str:
    if passed is None:
        return '<span class="badge neutral">n/a</span>'
    return f'<span class="badge {"pass" if passed else "fail"}">{esc(yes if passed else no)}</span>'


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: Iterable[int] = (),
          row_classes: Iterable[str] | None = None) -> str:
    """An HTML table. `headers` are plain text (escaped here); cells are HTML already made safe by the
    caller; columns in `numeric` are right-aligned."""
    num = set(numeric)
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in num else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(row))
        cls = f' class="{classes[r]}"' if classes and classes[r] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table (keys plain text, values safe HTML)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def card(label: str, value: str, extra: str = "") -> str:
    extra_html = f'<div class="extra">{extra}</div>' if extra else ""
    return f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{value}</div>{extra_html}</div>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: a header with a table of contents, then the non-empty sections."""
    present = [(a, t, b) for a, t, b in sections if b]
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in present)
    body = "".join(section(a, t, b) for a, t, b in present)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<header><h1>{esc(title)}</h1><p class=\"subtitle\">{subtitle}</p><nav>{nav}</nav></header>"
            f"{body}</main></body></html>\n")


# ---------------------------------------------------------------------------- links and images


def run_url(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """The MLflow UI address of a run when tracking goes to an http(s) server; None otherwise."""
    if not tracking_uri or experiment_id is None or not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_cell(tracking_uri: str | None, experiment_id: str | None, run_id: str | None) -> str:
    """A link to the run (its id's first 8 characters, the full id as tooltip), or the bare id."""
    if not run_id:
        return "—"
    url = run_url(tracking_uri, experiment_id, str(run_id))
    if url is None:
        return f"<code>{esc(run_id)}</code>"
    return f'<a href="{esc(url)}" title="{esc(run_id)}"><code>{esc(str(run_id)[:8])}</code></a>'


def data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def images_html(images: Mapping[str, Path] | None) -> str:
    """Each image as a titled figure, embedded; a missing file is named instead of breaking the report."""
    figures = []
    for title, raw in (images or {}).items():
        if raw is None:
            continue
        path = Path(raw)
        if not path.is_file():
            figures.append(f'<figure><figcaption>{esc(title)}</figcaption>'
                           f'<p class="muted">image not found: <code>{esc(path)}</code></p></figure>')
            continue
        figures.append(f'<figure><figcaption>{esc(title)}</figcaption>'
                       f'<img src="{data_uri(path)}" alt="{esc(title)}"></figure>')
    return "".join(figures)


# ---------------------------------------------------------------------------- pipeline report sections


def header_html(summary: Mapping[str, Any]) -> str:
    uri, exp_id = summary.get("tracking_uri"), summary.get("experiment_id")
    reg = summary.get("registered_model") or {}
    aliases = list(reg.get("aliases") or [])
    champion = reg.get("champion", summary.get("champion"))
    champion = "champion" in aliases if champion is None else bool(champion)
    alias_html = " ".join(f'<span class="badge neutral">{esc(a)}</span>' for a in aliases) or "—"
    pairs = [
        ("method", esc(summary.get("method", "—"))),
        ("experiment", f"{esc(summary.get('experiment', '—'))} <span class=\"muted\">(id {esc(exp_id)})</span>"),
        ("tracking", f"<code>{esc(uri or '—')}</code>"),
        ("parent run", run_cell(uri, exp_id, summary.get("parent_run_id"))),
        ("registered model", esc(reg.get("name") or "—")),
        ("version", fmt(reg.get("version"))),
        ("aliases", alias_html),
        ("champion", badge(champion, "yes", "no")),
    ]
    if reg.get("model_uri"):
        pairs.append(("model URI", f"<code>{esc(reg['model_uri'])}</code>"))
    if summary.get("output_dir"):
        pairs.append(("output folder", f"<code>{esc(summary['output_dir'])}</code>"))
    return kv_table(pairs)


def headline_html(summary: Mapping[str, Any]) -> str:
    metrics: Mapping[str, Any] = summary.get("metrics") or {}
    lc = summary.get("length_control") or {}
    gates = summary.get("gates") or []
    cards = []
    if "compare/win_rate" in metrics:
        cards.append(card("win rate vs reference", fmt(metrics["compare/win_rate"]),
                          "95 % CI " + fmt_ci(metrics.get("compare/win_rate_ci_low"),
                                               metrics.get("compare/win_rate_ci_high"))))
    if "lc_win_rate" in lc:
        cards.append(card("length-controlled win rate", fmt(lc["lc_win_rate"])))
    if "eval/rewards/accuracies" in metrics:
        cards.append(card("held-out reward accuracy", fmt(metrics["eval/rewards/accuracies"])))
    if "eval/rewards/margins" in metrics:
        cards.append(card("held-out reward margin", fmt(metrics["eval/rewards/margins"])))
    if gates:
        passed = all(g.get("passed") for g in gates)
        cards.append(card("gates", badge(passed, "all passed", "failed"),
                          f"{sum(bool(g.get('passed')) for g in gates)} of {len(gates)} passed"))
    rows = [(esc(name), fmt(value)) for name, value in metrics.items()]
    metrics_table = table(["metric", "value"], rows, numeric=[1]) if rows else '<p class="muted">no metrics</p>'
    return (f'<div class="cards">{"".join(cards)}</div>' if cards else "") + metrics_table


def gates_html(gates: list[Mapping[str, Any]] | None) -> str:
    if not gates:
        return ""
    rows = [(esc(g.get("name", "?")), fmt(g.get("value")), fmt(g.get("threshold")), badge(g.get("passed")))
            for g in gates]
    overall = all(g.get("passed") for g in gates)
    return (f"<p>Overall: {badge(overall, 'all gates passed', 'a gate failed')}</p>"
            + table(["gate", "value", "threshold", "passed"], rows, numeric=[1, 2]))


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
    return [(esc(b.replace("_", " ")), fmt_count(lc.get(f"length/{b}/n")), fmt(lc.get(f"length/{b}/win_rate")),
             fmt_ci(lc.get(f"length/{b}/win_rate_ci_low"), lc.get(f"length/{b}/win_rate_ci_high")))
            for b in buckets]


def comparison_html(summary: Mapping[str, Any], side_by_side: list[dict] | None) -> str:
    metrics: Mapping[str, Any] = summary.get("metrics") or {}
    lc: Mapping[str, Any] = summary.get("length_control") or {}
    judge: Mapping[str, Any] = summary.get("judge") or {}
    if "compare/win_rate" not in metrics and not lc and not judge and not side_by_side:
        return ""
    counts = verdict_counts(metrics, side_by_side)
    pairs = [("wins / ties / losses", " / ".join(fmt_count(counts[k]) for k in ("wins", "ties", "losses"))),
             ("win rate (ties count half)", fmt(metrics.get("compare/win_rate"))),
             ("95 % CI (Wilson)", fmt_ci(metrics.get("compare/win_rate_ci_low"), metrics.get("compare/win_rate_ci_high")))]
    for key, label in (("compare/policy_mean_score", "policy mean score"),
                       ("compare/reference_mean_score", "reference mean score")):
        if key in metrics:
            pairs.append((label, fmt(metrics[key])))
    if judge:
        errors = judge.get("errors")
        pairs.append(("judge", esc(judge.get("kind", "—"))))
        pairs.append(("judge errors", fmt_count(errors) + (" " + badge(False, no="errors") if errors else "")))
    body = kv_table(pairs)
    rows = length_rows(lc)
    if rows or "lc_win_rate" in lc:
        body += "<h3>Length-controlled view</h3>"
        if "lc_win_rate" in lc:
            body += f"<p>Length-controlled win rate: <strong>{fmt(lc['lc_win_rate'])}</strong></p>"
        if rows:
            body += table(["policy answer vs reference", "n", "win rate", "95 % CI"], rows, numeric=[1, 2, 3])
    return body


def verdict_badge(verdict: Any) -> str:
    css = {"win": "pass", "loss": "fail", "tie": "neutral"}.get(str(verdict), "warn")
    return f'<span class="badge {css}">{esc(verdict)}</span>'


def side_by_side_html(rows: list[dict] | None, max_rows: int) -> str:
    if not rows:
        return ""
    shown = rows[:max(0, max_rows)]
    cells = [tuple(f'<div class="text">{esc(r.get(k, ""))}</div>' for k in ("prompt", "reference", "policy"))
             + (verdict_badge(r.get("verdict", "?")),) for r in shown]
    note = f'<p class="muted">Showing {len(shown)} of {len(rows)} held-out prompts.</p>'
    return note + table(["prompt", "reference answer", "policy answer", "verdict"], cells)


def benchmark_rows(bench: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(task, metric, policy, reference, delta) per task and numeric metric; the main metric first and
    tagged. A task known only from "main" gets one row with metric "main"."""
    policy, reference = bench.get("policy") or {}, bench.get("reference") or {}
    main = bench.get("main") or {}
    rows = []
    for task in sorted(set(policy) | set(reference) | set(main)):
        pol, ref, head = policy.get(task) or {}, reference.get(task) or {}, main.get(task) or {}
        main_metric = head.get("metric") or next(
            (m for m, v in pol.items() if is_number(v) and "policy" in head and v == head["policy"]), None)
        metrics = [m for m in dict.fromkeys([*pol, *ref]) if is_number(pol.get(m)) or is_number(ref.get(m))]
        if main_metric in metrics:
            metrics.remove(main_metric)
            metrics.insert(0, main_metric)
        if head and main_metric not in metrics:
            rows.append((esc(task), esc(main_metric or "main") + ' <span class="badge neutral">main</span>',
                         fmt(head.get("policy")), fmt(head.get("reference")),
                         fmt_delta(head.get("delta", difference(head.get("policy"), head.get("reference"))))))
        for m in metrics:
            tag = ' <span class="badge neutral">main</span>' if m == main_metric else ""
            p, r = pol.get(m), ref.get(m)
            rows.append((esc(task), esc(m) + tag, fmt(p), fmt(r), fmt_delta(difference(p, r))))
    return rows


def difference(a: Any, b: Any) -> float | None:
    return float(a) - float(b) if is_number(a) and is_number(b) else None


def benchmarks_html(bench: Mapping[str, Any] | None) -> str:
    rows = benchmark_rows(bench or {})
    if not rows:
        return ""
    return table(["task", "metric", "policy", "reference", "delta"], rows, numeric=[2, 3, 4])


def contamination_html(contamination: Mapping[str, Any] | None) -> str:
    if not contamination:
        return ""
    rows = []
    for name, share in contamination.items():
        status = ('<span class="badge pass">clean</span>' if is_number(share) and share == 0
                  else '<span class="badge warn">overlap</span>' if is_number(share) else badge(None))
        rows.append((esc(name), fmt(share), status))
    return ('<p class="muted">Share of each evaluation set found in the training data.</p>'
            + table(["evaluation set", "share contaminated", "status"], rows, numeric=[1]))


def drops_html(title: str, drops: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    """Rows read/kept/dropped per split, then each drop reason with its examples."""
    if not drops:
        return ""
    rows, reasons = [], []
    for split, info in drops.items():
        formats = ", ".join(f"{f} ({fm})" for f, fm in (info.get("formats") or {}).items())
        rows.append((esc(split), esc(sources.get(split) or "—"), esc(formats or "—"), fmt_count(info.get("rows_read")),
                     fmt_count(info.get("rows_kept")), fmt_count(info.get("rows_dropped"))))
        for reason, count in (info.get("counts") or {}).items():
            examples = "<br>".join(
                esc(f"{e.get('file', '?')} row {e.get('row', '?')}"
                    + (f", field '{e['field']}'" if e.get("field") else "") + f": {e.get('message', '')}")
                for e in (info.get("examples") or {}).get(reason, []))
            reasons.append((esc(split), esc(reason), fmt_count(count), f'<div class="text">{examples or "—"}</div>'))
    body = f"<h3>{esc(title)}</h3>" + table(["split", "source", "format", "read", "kept", "dropped"], rows,
                                            numeric=[3, 4, 5])
    if reasons:
        body += table(["split", "drop reason", "rows", "examples"], reasons, numeric=[2])
    return body


def data_html(report: Mapping[str, Any] | None) -> str:
    """The prepare stage's report.json: rows per split, drops by reason, length statistics."""
    if not report:
        return ""
    body = ""
    counts = report.get("counts") or {}
    if counts:
        body += "<h3>Rows per split</h3>" + table(["split", "rows"], [(esc(k), fmt_count(v)) for k, v in counts.items()],
                                                  numeric=[1])
    body += drops_html("Rows read, kept and dropped", report.get("drops") or {}, report.get("sources") or {})
    tokenized = (report.get("tokenized") or {}).get("drops") or {}
    if any((info or {}).get("rows_dropped") for info in tokenized.values()):
        body += drops_html("Dropped after tokenization", tokenized, {})
    lengths = {k: v for k, v in (report.get("lengths") or {}).items() if v}
    if lengths:
        unit = report.get("length_unit", "characters")
        rows = [(esc(name), *(fmt_count(s.get("count")) if k == "count" else fmt(s.get(k), 1) for k in LENGTH_STATS))
                for name, s in lengths.items()]
        body += (f"<h3>Lengths ({esc(unit)})</h3>"
                 + table(["field", *LENGTH_STATS], rows, numeric=range(1, len(LENGTH_STATS) + 1)))
    if report.get("fingerprint"):
        body += f'<p class="muted">data fingerprint <code>{esc(report["fingerprint"])}</code></p>'
    return body


def config_html(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, indent=2, default=str, ensure_ascii=False)
    return f"<details><summary>Pipeline configuration (JSON)</summary><pre>{esc(text)}</pre></details>"


def runs_html(summary: Mapping[str, Any]) -> str:
    uri, exp_id = summary.get("tracking_uri"), summary.get("experiment_id")
    rows = []
    if summary.get("parent_run_id"):
        rows.append(("pipeline (parent)", run_cell(uri, exp_id, summary["parent_run_id"])))
    rows += [(esc(stage), run_cell(uri, exp_id, rid)) for stage, rid in (summary.get("stage_runs") or {}).items()]
    if not rows:
        return ""
    return table(["stage", "MLflow run"], rows)


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
    subtitle = (f"experiment {esc(summary.get('experiment', '—'))} · parent run "
                f"{run_cell(summary.get('tracking_uri'), summary.get('experiment_id'), summary.get('parent_run_id'))}")
    sections = [
        ("run", "Run", header_html(summary)),
        ("headline", "Headline metrics", headline_html(summary)),
        ("gates", "Promotion gates", gates_html(summary.get("gates"))),
        ("comparison", "Policy vs reference", comparison_html(summary, side_by_side)),
        ("side-by-side", "Side by side", side_by_side_html(side_by_side, max_rows)),
        ("benchmarks", "Benchmarks", benchmarks_html(summary.get("benchmarks"))),
        ("contamination", "Contamination", contamination_html(summary.get("contamination"))),
        ("data", "Data", data_html(data_report)),
        ("plots", "Plots", images_html(images)),
        ("config", "Configuration", config_html(config)),
        ("mlflow", "MLflow runs", runs_html(summary)),
    ]
    return page(f"alignflow pipeline report — {method}", subtitle, sections)


def compact_params(params: Mapping[str, Any] | None, prefix: str = "") -> str:
    """{"beta": 0.1, "optim": {"lr": 1e-6}} -> "beta=0.1, optim.lr=1e-06" (not escaped)."""
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
        name = f"<strong>{esc(r.get('variant', '?'))}</strong>" + (
            '<span class="badge best-badge">best</span>' if best else "")
        gates = r.get("gates_passed")
        cells.append((name, esc(r.get("method", "—")), f"<code>{esc(compact_params(r.get('params')) or '—')}</code>",
                      fmt(r.get("win_rate")), fmt_ci(r.get("win_rate_ci_low"), r.get("win_rate_ci_high")),
                      fmt(r.get("reward_accuracy")), fmt(r.get("lc_win_rate")), *(fmt(bench.get(t)) for t in tasks),
                      badge(None if gates is None else bool(gates)), fmt_seconds(r.get("train_seconds")),
                      run_cell(tracking_uri, experiment_id, r.get("parent_run_id"))))
        classes.append("best" if best else "")
    numeric = [3, 4, 5, 6, *range(7, 7 + len(tasks)), 8 + len(tasks)]
    body = (table(headers, cells, numeric=numeric, row_classes=classes) if rows
            else '<p class="muted">no variants</p>')
    best_rows = [r for r in rows if r.get("best")]
    subtitle = f"{len(rows)} variant{'s' if len(rows) != 1 else ''}"
    if best_rows:
        subtitle += f" · best: <strong>{esc(best_rows[0].get('variant', '?'))}</strong>"
    if tracking_uri:
        subtitle += f" · tracking <code>{esc(tracking_uri)}</code>"
    sections = [("variants", "Variants", body), ("plots", "Plots", images_html(images))]
    return page(title, subtitle, sections)


def write_report(html: str, path: Path) -> Path:
    """Write the report atomically (a temporary file beside it, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
