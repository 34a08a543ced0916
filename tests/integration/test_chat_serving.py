"""The registered champion served the standard way speaks chat: a tiny model registered as the pipeline does
(tasks/registry.py), `mlflow models serve -m models:/NAME@champion --env-manager local` on a free loopback port,
then POST /invocations with OpenAI-style messages. The reply must be the assistant's answer — what the model
generates greedily after its chat template — not the prompt echoed back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from alignment.models.generation import generate
from alignment.models.loading import load_causal_lm, load_tokenizer
from flows.stack import free_ports
from tests.arena.registry_util import register_tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
QUESTION = "What sound does a cow make?"


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_mlflow_models_serve_answers_chat_with_the_template(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny(uri, tmp_path, "alignflow-quickstart", seed=3, champion=True)
    policy = tmp_path / "run-3" / "policy"
    model, tok = load_causal_lm(str(policy)), load_tokenizer(str(policy))
    messages = [{"role": "user", "content": QUESTION}]
    [[expected]] = generate(model, tok, [messages], max_new_tokens=10, batch_size=1)
    assert "moo" in expected  # what the model was fitted to answer (tests/arena/registry_util.py)

    [port] = free_ports(1)
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` execs `uvicorn` from PATH (an activated venv)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                             "models:/alignflow-quickstart@champion", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "-w", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=3):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
        else:
            raise AssertionError("mlflow models serve did not answer /ping: " + (tmp_path / "serve.log").read_text()[-3000:])
        status, reply = post(f"http://127.0.0.1:{port}/invocations", {"messages": messages, "max_tokens": 10})
        assert status == 200, reply
        assert isinstance(reply, list) and len(reply) == 1, reply  # one chat completion per request
        [reply] = reply
        message = reply["choices"][0]["message"]
        assert message["role"] == "assistant"
        assert message["content"] != QUESTION and QUESTION not in message["content"]
        assert message["content"].strip() == expected  # the template was applied: the same greedy answer
        assert "moo" in message["content"]
        assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
