"""The arena in a real browser, as a service of the local stack: two tiny models registered the pipeline's
way (a champion and a candidate, each with a reference), the page opened in headless Chromium (Debian's
`chromium` through Playwright, as test_browser.py), a question asked, two answers streamed side by side, a
answer rated on its own, a vote cast and the models revealed; then the vote is found in the stack's SQLite database and in the dataset
`alignflow arena export` writes to S3. Screenshots go to test-artifacts/arena/ (the README's come from here)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.stack import Stack, s3_client
from tests.arena.registry_util import register_tiny
from tests.integration.browserutil import BROWSER_MARKS, save_failure
from tests.integration.stackutil import running_stack

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the test extra installs it
    pass

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "arena"
QUESTION = "What sound does a cow make?"
pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("arena-stack")
    with running_stack(root / "stack") as st:
        env = st.client_env()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({k: v for k, v in env.items() if k != "PREFECT_API_URL"})
        try:
            register_tiny(st.urls["mlflow"], root, "alignflow-quickstart", seed=1, champion=True)
            register_tiny(st.urls["mlflow"], root, "alignflow-quickstart", seed=2, champion=False)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield st


def test_ask_vote_and_find_the_vote_in_the_database_and_the_export(stack: Stack, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert stack.status()["arena"]["healthy"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(120_000)
    page = context.new_page()
    try:
        page.goto(stack.urls["arena"])
        # the default pair: the champion against its reference
        expect(page.locator("#model_a")).to_have_value("alignflow-quickstart/1")
        expect(page.locator("#model_b")).to_have_value("alignflow-quickstart/1/reference")
        expect(page.locator("#heldout option")).to_have_count(3, timeout=30_000)  # "(type your own)" + 2 held-out prompts
        page.fill("#annotator", "tester")
        page.select_option("#heldout", QUESTION)
        expect(page.locator("#prompt")).to_have_value(QUESTION)
        page.screenshot(path=str(SHOTS / "arena-1-ask.png"))
        page.click("#ask")
        # the buttons of the (disabled) vote box are enabled once both answers are complete
        expect(page.get_by_role("button", name="Answer 1 is better")).to_be_enabled(timeout=240_000)
        expect(page.locator("#message")).to_contain_text("both answers are in")
        left = page.locator("#left .text").inner_text()
        right = page.locator("#right .text").inner_text()
        assert left.strip() and right.strip()
        assert "alignflow-quickstart" not in page.locator(".answers").inner_text()  # blind until the vote
        # a single-answer rating of the second answer, before the vote (KTO learns from it)
        page.locator("#right .rate button[data-rating=bad]").click()
        expect(page.locator("#right .rated")).to_have_text("rated bad", timeout=30_000)
        expect(page.locator("#right .rate button[data-rating=good]")).to_be_disabled()
        page.fill("#note", "first answer reads better")
        page.screenshot(path=str(SHOTS / "arena-2-answers.png"))
        page.get_by_role("button", name="Answer 1 is better").click()
        expect(page.locator("#message")).to_contain_text("vote recorded", timeout=30_000)
        expect(page.locator("#left .who")).to_contain_text("alignflow-quickstart v1")
        expect(page.locator("#stats tbody tr")).to_have_count(2)
        page.screenshot(path=str(SHOTS / "arena-3-voted.png"), full_page=True)
    except BaseException:
        save_failure(page, stack, SHOTS)
        raise
    finally:
        context.close()

    with sqlite3.connect(stack.dir / "arena" / "arena.db") as db:
        rows = db.execute("SELECT v.comparison_id, v.choice, v.annotator, v.note, c.left_answer, c.left_model, "
                          "v.winner_model FROM votes v JOIN comparisons c ON c.id = v.comparison_id").fetchall()
    [(cid, choice, annotator, note, left_answer, left_model, winner)] = rows
    assert (choice, annotator, note, winner) == ("left", "tester", "first answer reads better", left_model)
    assert left_answer == left.strip()

    env = {**os.environ, **stack.client_env()}
    proc = subprocess.run([str(Path(sys.executable).parent / "alignflow"), "arena", "export", "--stack-dir",
                           str(stack.dir)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    uri = proc.stdout.strip().splitlines()[-1].removeprefix("export: ")
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = s3_client(stack.client_env()).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    [row] = [json.loads(line) for line in body.splitlines()]
    assert row["arena_comparison_id"] == cid and row["chosen"][0]["content"] == left.strip()
    assert row["prompt"] == [{"role": "user", "content": QUESTION}]
    # the rating: the second answer as an undesirable example beside the export
    unpaired = s3_client(stack.client_env()).get_object(Bucket=bucket, Key=key.replace("train.jsonl", "unpaired.jsonl"))
    [example] = [json.loads(line) for line in unpaired["Body"].read().decode().splitlines()]
    assert (example["completion"][0]["content"], example["label"], example["arena_rating"]) == (right.strip(), False, "bad")
