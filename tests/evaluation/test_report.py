"""HTML reports from hand-made inputs: sections present, numbers to 3 decimals, badges, embedded images,
escaped user text, MLflow links for a server and plain ids for a local store, the best variant marked."""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evaluation.plots import plot_verdicts
from evaluation.report import (
    Part,
    Section,
    environment,
    render_comparison_report,
    render_pipeline_report,
    write_report,
)

PID, DPO_RUN, SFT_RUN = "p" * 32, "b" * 32, "a" * 32
SUMMARY = {
    "tracking_uri": "http://127.0.0.1:5000/", "experiment": "alignflow-demo", "experiment_id": "3",
    "parent_run_id": PID, "stage_runs": {"sft": SFT_RUN, "dpo": DPO_RUN}, "method": "dpo",
    "metrics": {"compare/win_rate": 0.8984, "compare/win_rate_ci_low": 0.71, "compare/win_rate_ci_high": 0.95,
                "eval/rewards/accuracies": 0.75, "sft/steps": 200, "dpo/final_loss": 0.41234},
    "gates": [{"name": "win_rate_ci_low", "value": 0.71, "threshold": 0.6, "passed": True},
              {"name": "finite_losses", "value": 0.0, "threshold": 1.0, "passed": False}],
    "registered_model": {"name": "alignflow-policy", "version": "2", "aliases": ["candidate", "champion"],
                         "model_uri": "models:/m-1"},
    "output_dir": "/tmp/run",
    "benchmarks": {"policy": {"alignflow_animal_mc": {"acc": 0.81, "acc_stderr": 0.02, "alias": "animal"}},
                   "reference": {"alignflow_animal_mc": {"acc": 0.74, "acc_stderr": 0.02}},
                   "main": {"alignflow_animal_mc": {"policy": 0.81, "reference": 0.74, "delta": 0.07}}},
    "contamination": {"heldout": 0.0, "alignflow_animal_mc": 0.125},
    "length_control": {"lc_win_rate": 0.6543, "length/similar/win_rate": 0.7, "length/similar/win_rate_ci_low": 0.5,
                       "length/similar/win_rate_ci_high": 0.85, "length/similar/n": 20.0,
                       "length/policy_longer/win_rate": 0.9, "length/policy_longer/n": 8.0},
    "judge": {"kind": "reward_model", "errors": 2},
}
DATA_REPORT = {
    "counts": {"train": 900, "heldout": 100},
    "drops": {"train": {"counts": {"empty_response": 3}, "rows_read": 903, "rows_kept": 900, "rows_dropped": 3,
                        "examples": {"empty_response": [{"file": "train.jsonl", "row": 7, "field": "chosen",
                                                         "message": "empty <b>content</b>"}]},
                        "formats": {"train.jsonl": "preference"}}},
    "sources": {"train": "data/train.jsonl", "heldout": "data/heldout.jsonl"},
    "length_unit": "tokens",
    "lengths": {"prompt": {"count": 900, "min": 3, "mean": 41.25, "p50": 40.0, "p90": 70.0, "p99": 90.0,
                           "median": 40.0, "max": 120}, "sft": {}},
    "fingerprint": "f" * 64,
}
SIDE_BY_SIDE = [{"prompt": "Say <script>alert(1)</script> & more", "reference": "ref answer", "policy": "pol answer",
                 "verdict": "win"},
                {"prompt": "second", "reference": "r2", "policy": "p2", "verdict": "loss"},
                {"prompt": "third", "reference": "r3", "policy": "p3", "verdict": "tie"}]
CONFIG = {"run": {"name": "</pre><script>x()</script>"}, "dpo": {"beta": 0.1}}


class Collector(HTMLParser):
    """Tags, image sources and links of a page; parsing it also checks it is well-formed enough to parse."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values["src"] or "")
        if tag == "a" and values.get("href", "").startswith("http"):
            self.links.append(values["href"] or "")


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    return collector


@pytest.fixture()
def png(tmp_path: Path) -> Path:
    return plot_verdicts({"compare/wins": 3.0, "compare/ties": 1.0, "compare/losses": 1.0}, tmp_path / "v.png")


def test_pipeline_report_has_every_section(png: Path) -> None:
    page = render_pipeline_report(SUMMARY, config=CONFIG, data_report=DATA_REPORT, images={"Verdicts": png},
                                  side_by_side=SIDE_BY_SIDE)
    for anchor in ("run", "headline", "gates", "comparison", "side-by-side", "benchmarks", "contamination", "data",
                   "plots", "config", "mlflow"):
        assert f'<section id="{anchor}">' in page, anchor
    assert page.startswith("<!DOCTYPE html>") and "<link" not in page and "<script" not in page
    assert "0.898" in page and "[0.710, 0.950]" in page and "0.654" in page  # 3 decimals
    assert '<span class="badge pass">pass</span>' in page and '<span class="badge fail">fail</span>' in page
    assert '<span class="badge pass">yes</span>' in page  # champion
    assert "alignflow-policy" in page and "candidate" in page
    assert "1 / 1 / 1" in page  # wins/ties/losses counted from the side-by-side rows
    assert "reward_model" in page and "policy longer" in page
    assert "+0.070" in page and "acc_stderr" in page and ">animal<" not in page  # non-numeric skipped
    assert "0.125" in page and "overlap" in page and "clean" in page
    assert "empty_response" in page and "data/train.jsonl" in page and "41.2" in page
    assert "<details>" in page and "&quot;beta&quot;: 0.1" in page


def test_user_text_is_escaped() -> None:
    page = render_pipeline_report(SUMMARY, config=CONFIG, data_report=DATA_REPORT, side_by_side=SIDE_BY_SIDE)
    assert "<script" not in page
    assert "Say &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in page
    assert "empty &lt;b&gt;content&lt;/b&gt;" in page


def test_images_are_embedded_as_data_uris(png: Path, tmp_path: Path) -> None:
    page = render_pipeline_report(SUMMARY, config={}, images={"Verdicts <1>": png,
                                                              "Missing": tmp_path / "nope.png"})
    (src,) = parse(page).images
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert "<figcaption>Verdicts &lt;1&gt;</figcaption>" in page and "image not found" in page


def test_links_for_a_server_and_plain_ids_for_sqlite() -> None:
    links = parse(render_pipeline_report(SUMMARY, config={})).links
    assert f"http://127.0.0.1:5000/#/experiments/3/runs/{DPO_RUN}" in links
    assert f"http://127.0.0.1:5000/#/experiments/3/runs/{PID}" in links
    local = dict(SUMMARY, tracking_uri="sqlite:///mlflow.db")
    page = render_pipeline_report(local, config={})
    assert parse(page).links == [] and f"<code>{DPO_RUN}</code>" in page and "#/experiments" not in page


def test_side_by_side_stops_at_max_rows() -> None:
    page = render_pipeline_report(SUMMARY, config={}, side_by_side=SIDE_BY_SIDE, max_rows=2)
    assert "Showing 2 of 3" in page and "second" in page and "third" not in page


def test_summary_with_only_the_base_keys_renders() -> None:
    base = {k: copy.deepcopy(v) for k, v in SUMMARY.items()
            if k not in ("benchmarks", "contamination", "length_control", "judge")}
    base["registered_model"] = {"name": "m", "version": None, "aliases": [], "model_uri": None}
    page = render_pipeline_report(base, config={})
    for anchor in ("benchmarks", "contamination", "data", "plots", "side-by-side"):
        assert f'id="{anchor}"' not in page
    assert '<span class="badge fail">no</span>' in page  # not champion
    assert render_pipeline_report({}, config={}).startswith("<!DOCTYPE html>")


def test_benchmarks_from_main_only() -> None:
    summary = dict(SUMMARY, benchmarks={"main": {"arc_easy": {"policy": 0.5, "reference": 0.55, "delta": -0.05}}})
    page = render_pipeline_report(summary, config={})
    assert "arc_easy" in page and '<span class="neg">-0.050</span>' in page


ROWS = [
    {"variant": "dpo-beta0.1", "method": "dpo", "params": {"beta": 0.1, "optim": {"lr": 5e-7}}, "win_rate": 0.8984,
     "win_rate_ci_low": 0.71, "win_rate_ci_high": 0.95, "reward_accuracy": 0.75, "lc_win_rate": 0.66,
     "benchmarks": {"alignflow_animal_mc": 0.81}, "gates_passed": True, "train_seconds": 95.25,
     "parent_run_id": PID, "best": True},
    {"variant": "orpo <x>", "method": "orpo", "params": {"beta": 0.2}, "win_rate": 0.6, "win_rate_ci_low": 0.4,
     "win_rate_ci_high": 0.77, "reward_accuracy": None, "lc_win_rate": None,
     "benchmarks": {"arc_easy": 0.4}, "gates_passed": False, "train_seconds": 300.0, "parent_run_id": DPO_RUN,
     "best": False},
]


def test_comparison_report_marks_the_best_and_links_runs(png: Path) -> None:
    page = render_comparison_report(ROWS, title="DPO vs ORPO", images={"methods": png},
                                    tracking_uri="https://mlflow.example", experiment_id="7")
    assert '<tr class="best">' in page and page.count("best-badge\">best<") == 1
    best_row = re.search(r'<tr class="best">(.*?)</tr>', page).group(1)
    assert "dpo-beta0.1" in best_row
    assert "0.898" in page and "[0.710, 0.950]" in page and "5.0 min" in page and "95.2 s" in page
    assert "beta=0.1, optim.lr=5e-07" in page and "orpo &lt;x&gt;" in page
    assert "<th class=\"num\">alignflow_animal_mc</th>" in page and "<th class=\"num\">arc_easy</th>" in page
    assert '<span class="badge pass">pass</span>' in page and '<span class="badge fail">fail</span>' in page
    assert parse(page).links == [f"https://mlflow.example/#/experiments/7/runs/{PID}",
                                 f"https://mlflow.example/#/experiments/7/runs/{DPO_RUN}"]
    assert len(parse(page).images) == 1


def test_comparison_report_plain_ids_and_sparse_rows() -> None:
    page = render_comparison_report([{"variant": "x"}, *ROWS], title="t", tracking_uri="sqlite:///m.db",
                                    experiment_id="1")
    assert parse(page).links == [] and f"<code>{PID}</code>" in page
    assert "no variants" in render_comparison_report([], title="empty")


def test_write_report_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run.html"
    assert write_report("<p>one</p>", target) == target
    write_report("<p>two</p>", target)
    assert target.read_text() == "<p>two</p>" and [p.name for p in target.parent.iterdir()] == ["run.html"]


PLANTED: list[str] = []


def plant(field: str) -> str:
    """Markup that would add an element and a handler to the page if it were written unescaped; `field`
    says where it was planted. No '/', '_' or '"', so every field shows it as it is (length buckets are
    split on '/', their '_' become spaces, the config's JSON would escape '"')."""
    PLANTED.append(field)
    return f"<x-{field} onclick='go()'>&amp;"


PLANTED_SUMMARY = {
    "tracking_uri": "http://127.0.0.1:5000/" + plant("tracking"), "experiment": plant("experiment"),
    "experiment_id": plant("experimentid"), "parent_run_id": plant("parentrun"),
    "stage_runs": {plant("stage"): plant("stagerun")}, "method": plant("method"),
    "metrics": {plant("metric"): plant("metricvalue")},
    "gates": [{"name": plant("gate"), "value": plant("gatevalue"), "threshold": plant("gatethreshold"),
               "passed": True}],
    "registered_model": {"name": plant("model"), "version": plant("version"), "aliases": [plant("alias")],
                         "model_uri": plant("modeluri")},
    "output_dir": plant("outputdir"),
    "benchmarks": {"policy": {plant("task"): {plant("benchmetric"): 0.5}}, "reference": {},
                   "main": {plant("maintask"): {"metric": plant("mainmetric"), "policy": 0.5}}},
    "contamination": {plant("evalset"): plant("share")},
    "length_control": {f"length/{plant('bucket')}/n": 1.0},
    "judge": {"kind": plant("judge"), "errors": 0},
}
PLANTED_DATA_REPORT = {
    "counts": {plant("countsplit"): 1},
    "drops": {plant("split"): {"counts": {plant("reason"): 1}, "rows_read": 1, "rows_kept": 0, "rows_dropped": 1,
                               "examples": {plant("reason"): [
                                   {"file": plant("file"), "row": plant("row"), "field": plant("field"),
                                    "message": plant("message")}]},
                               "formats": {plant("formatfile"): plant("format")}}},
    "sources": {plant("split"): plant("source")},
    "tokenized": {"drops": {plant("tokensplit"): {"rows_dropped": 1, "counts": {plant("tokenreason"): 1}}}},
    "length_unit": plant("unit"),
    "lengths": {plant("lengthfield"): {"count": 1, "mean": 2.0}},
    "fingerprint": plant("fingerprint"),
}
PLANTED_SIDE_BY_SIDE = [{"prompt": plant("prompt"), "reference": plant("reference"), "policy": plant("policy"),
                         "verdict": plant("verdict")}]
PLANTED_CONFIG = {plant("configkey"): plant("configvalue"), "notes": [plant("note")]}
PIPELINE_FIELDS = list(PLANTED)
PLANTED_ROWS = [{"variant": plant("variant"), "method": plant("cmpmethod"),
                 "params": {plant("param"): plant("paramvalue"), "nested": {plant("inner"): 1.5}},
                 "win_rate": plant("winrate"), "benchmarks": {plant("cmptask"): plant("cmptaskvalue")},
                 "train_seconds": plant("seconds"), "parent_run_id": plant("cmprun"), "best": True}]
COMPARISON_FIELDS = PLANTED[len(PIPELINE_FIELDS):]


class Text(HTMLParser):
    """What a reader sees of a page: its text and attribute values, character references resolved; and the
    names of every element and attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.seen: list[str] = []
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names |= {tag, *(name for name, _ in attrs)}
        self.seen += [value or "" for _, value in attrs]

    def handle_data(self, data: str) -> None:
        self.seen.append(data)


def assert_shown_as_text(page: str, fields: list[str]) -> None:
    text = Text()
    text.feed(page)
    assert "<x-" not in page and not any(n.startswith("x-") for n in text.names) and "onclick" not in text.names
    missing = [f for f in fields if not any(f"<x-{f} onclick='go()'>&amp;" in s for s in text.seen)]
    assert missing == []


def test_markup_planted_in_every_field_of_a_run_is_shown_as_text(png: Path, tmp_path: Path) -> None:
    images = {plant("imagetitle"): png, plant("missingtitle"): tmp_path / plant("missingpath")}
    page = render_pipeline_report(PLANTED_SUMMARY, config=PLANTED_CONFIG, data_report=PLANTED_DATA_REPORT,
                                  images=images, side_by_side=PLANTED_SIDE_BY_SIDE)
    assert_shown_as_text(page, [*PIPELINE_FIELDS, "imagetitle", "missingtitle", "missingpath"])
    local = render_pipeline_report(dict(PLANTED_SUMMARY, tracking_uri=plant("localtracking")), config={})
    assert_shown_as_text(local, ["localtracking", "parentrun", "stagerun"])


def test_markup_planted_in_every_field_of_a_comparison_is_shown_as_text(png: Path) -> None:
    page = render_comparison_report(PLANTED_ROWS, title=plant("title"), images={plant("plot"): png},
                                    tracking_uri="https://mlflow.example/" + plant("cmptracking"),
                                    experiment_id=plant("cmpexperiment"))
    assert_shown_as_text(page, [*COMPARISON_FIELDS, "title", "plot", "cmptracking", "cmpexperiment"])


def test_reports_render_from_another_working_directory(tmp_path: Path) -> None:
    """The page's templates and styles come with the package, not from the current directory."""
    script = ("from evaluation.report import render_comparison_report, render_pipeline_report\n"
              "print(render_pipeline_report({'method': 'dpo'}, config={'a': 1}))\n"
              "print(render_comparison_report([{'variant': 'v'}], title='t'))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("<!DOCTYPE html>") == 2 and "box-sizing: border-box" in done.stdout
    assert "alignflow pipeline report — dpo" in done.stdout and '<section id="variants">' in done.stdout


def test_another_page_can_extend_the_report_chrome() -> None:
    """base.html is the chrome of any alignflow page (the arena's, say): the report styles, the header and
    table of contents, then the page's own sections; what the page writes is escaped there too."""
    page = environment().from_string(
        '{% extends "base.html" %}'
        "{% block style %}{{ super() }}.vote { color: red; }{% endblock %}"
        "{% block section_body %}<p>{{ s.data }}</p>{% endblock %}"
    ).render(title="arena <b>", subtitle=("blind vote: ", Part("code", "v1 & v2")),
             sections=[Section("vote", "Vote", "Which answer <i>is</i> better?")])
    assert page.startswith("<!DOCTYPE html>") and "box-sizing: border-box" in page and ".vote { color: red; }" in page
    assert "<title>arena &lt;b&gt;</title>" in page and "blind vote: <code>v1 &amp; v2</code>" in page
    assert '<nav><a href="#vote">Vote</a></nav>' in page
    assert '<section id="vote"><h2>Vote</h2><p>Which answer &lt;i&gt;is&lt;/i&gt; better?</p></section>' in page
