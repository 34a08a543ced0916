"""Judges behind one interface: the program judge on hand-made answers (good = 2 > well-formed wrong fact = 1
> refusal/other = 0); a reward-model judge on a tiny local classifier whose reward is set by hand; an
endpoint judge against a chat-completions server on loopback (both orders, retries, secrets)."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

from alignment.config import JudgeConfig
from alignment.models.loading import ModelLoadError
from evaluation.judges import (
    EndpointJudge,
    JudgeError,
    ProgramJudge,
    RewardModelJudge,
    judge_pairs,
    last_user_message,
    make_judge,
    parse_verdict,
)
from evaluation.stats import win_rate

SYSTEM = {"role": "system", "content": "You answer questions about animals."}
PROMPT = [SYSTEM, {"role": "user", "content": "What sound does a cow make?"}]
GOOD, WRONG, REFUSAL = "The cow says moo.", "The cow says quack.", "Sorry, I do not know."


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------- program


@pytest.mark.parametrize(("policy", "reference", "verdict"), [
    (GOOD, REFUSAL, "win"),
    (GOOD, WRONG, "win"),
    (WRONG, REFUSAL, "win"),
    (GOOD, GOOD, "tie"),
    (REFUSAL, "Sorry, I cannot answer that.", "tie"),  # both score 0
    (WRONG, "The cow says woof.", "tie"),  # both well-formed wrong facts
    (REFUSAL, GOOD, "loss"),
    (WRONG, GOOD, "loss"),
    ("The cow says moo. The cow says moo.", WRONG, "loss"),  # rambling scores 0
])
def test_program_judge_verdicts(policy: str, reference: str, verdict: str) -> None:
    assert ProgramJudge().compare(PROMPT, policy, reference) == verdict


def test_program_judge_reads_the_last_user_turn() -> None:
    prompt = [*PROMPT, {"role": "assistant", "content": GOOD},
              {"role": "user", "content": "Where does a duck live?"}]
    judge = ProgramJudge()
    assert judge.compare(prompt, "The duck lives in the pond.", GOOD) == "win"
    assert judge.score(prompt, "The duck lives in the pond.") == 2.0
    assert judge.score(prompt, "The duck lives in the barn.") == 1.0
    assert last_user_message(prompt) == "Where does a duck live?"


def test_program_judge_refuses_foreign_prompts() -> None:
    with pytest.raises(ValueError, match="not a quickstart prompt"):
        ProgramJudge().compare([{"role": "user", "content": "Write a poem."}], GOOD, WRONG)
    with pytest.raises(ValueError, match="no user message"):
        ProgramJudge().compare([SYSTEM], GOOD, WRONG)


def test_judge_pairs_with_the_program_judge() -> None:
    verdicts = judge_pairs(ProgramJudge(), [PROMPT] * 3, [GOOD, WRONG, REFUSAL], [WRONG, WRONG, GOOD])
    assert verdicts == ["win", "tie", "loss"]
    with pytest.raises(ValueError, match="2 prompts, 1 policy"):
        judge_pairs(ProgramJudge(), [PROMPT] * 2, [GOOD], [GOOD, GOOD])


def test_make_judge_program() -> None:
    judge = make_judge(JudgeConfig())
    assert isinstance(judge, ProgramJudge) and judge.name == "program"


# ---------------------------------------------------------------------------------------- reward model

WORDS = ["[PAD]", "[UNK]", "good", "bad", "system", "user", "assistant", "the", "cow", "says", "moo",
         "quack", "what", "sound", "does", "a", "make", "?", ":", "you", "answer", "questions", "about",
         "animals", "."]
HIDDEN = 16
# The last token's embedding is a one-hot; RMSNorm scales it to sqrt(HIDDEN) = 4 on that axis, and the
# score head reads axis 1. So the reward is +4 for an answer ending in "good", -4 for "bad", 0 otherwise.
REWARD = HIDDEN ** 0.5
# A chat template that ends with the answer's last token (no trailing markers), so the hand-set reward
# applies with and without a template.
ROLE_TEMPLATE = ("{% for m in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
                 "{{ m['role'] }}: {{ m['content'] }}{% endfor %}")


def make_reward_model(out_dir: Path, *, num_labels: int = 1, chat_template: str | None = None) -> Path:
    """A one-layer Llama classifier whose layers add nothing (o_proj, down_proj = 0), so the reward is a
    hand-set function of the last non-pad token; a word-level tokenizer saved alongside (no download)."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        chat_template=chat_template, model_max_length=64)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=vocab["[PAD]"], num_labels=num_labels)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros(len(WORDS), HIDDEN)
        embed[:, 0] = 1.0  # neutral: reads 0 on axis 1
        embed[vocab["good"]] = torch.nn.functional.one_hot(torch.tensor(1), HIDDEN).float()
        embed[vocab["bad"]] = -torch.nn.functional.one_hot(torch.tensor(1), HIDDEN).float()
        model.model.embed_tokens.weight.copy_(embed)
        score = torch.zeros(num_labels, HIDDEN)
        score[-1, 1] = 1.0  # the last label reads +axis 1
        if num_labels > 1:
            score[0, 1] = -1.0  # the first label prefers the opposite
        model.score.weight.copy_(score)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reward_model(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def reward_judge(reward_dir: Path) -> RewardModelJudge:
    return RewardModelJudge(str(reward_dir), batch_size=2)


@pytest.mark.parametrize(("policy", "reference", "verdict"), [
    ("the cow says good", "the cow says bad", "win"),
    ("the cow says good", "the cow says moo", "win"),
    ("moo", "the cow says bad", "win"),
    ("the cow says bad", "good", "loss"),
    ("moo", "quack", "tie"),  # both neutral: equal rewards
    ("good", "the cow says good", "tie"),
])
def test_reward_model_verdicts(reward_judge: RewardModelJudge, policy: str, reference: str,
                               verdict: str) -> None:
    assert reward_judge.compare(PROMPT, policy, reference) == verdict


def test_reward_model_scores_and_batches(reward_judge: RewardModelJudge) -> None:
    """Rewards are +4 / -4 / 0 (see REWARD); batches of 2 with padding give the same scores as one by one."""
    answers = ["the cow says good", "bad", "the cow says moo", "good", "what sound does the cow make ? bad"]
    expected = [REWARD, -REWARD, 0.0, REWARD, -REWARD]
    batched = reward_judge.score_many([PROMPT] * len(answers), answers)
    singles = [reward_judge.score(PROMPT, a) for a in answers]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(singles), torch.tensor(batched), atol=1e-5, rtol=0)
    assert reward_judge.compare_many([PROMPT] * 3, ["good", "moo", "bad"], ["bad", "moo", "good"]) == \
        ["win", "tie", "loss"]
    assert judge_pairs(reward_judge, [PROMPT] * 2, ["good", "bad"], ["moo", "moo"]) == ["win", "loss"]


def test_reward_model_tie_margin(reward_dir: Path) -> None:
    """tie_margin 5: good vs neutral differ by 4 -> tie; good vs bad differ by 8 -> win."""
    judge = RewardModelJudge(str(reward_dir), tie_margin=5.0)
    assert judge.compare(PROMPT, "good", "moo") == "tie"
    assert judge.compare(PROMPT, "good", "bad") == "win"
    assert judge.compare(PROMPT, "bad", "good") == "loss"


def test_reward_model_uses_the_chat_template(tmp_path: Path) -> None:
    judge = RewardModelJudge(str(make_reward_model(tmp_path, chat_template=ROLE_TEMPLATE)))
    assert judge._render(PROMPT, "moo") == ("system: You answer questions about animals.\n"
                                            "user: What sound does a cow make?\nassistant: moo")
    assert judge.compare(PROMPT, "the cow says good", "the cow says bad") == "win"
    plain = RewardModelJudge(str(make_reward_model(tmp_path / "plain")))
    assert plain._render(PROMPT, "moo") == ("You answer questions about animals.\n\n"
                                            "What sound does a cow make?\n\nmoo")


def test_reward_model_with_two_labels_reads_the_last(tmp_path: Path) -> None:
    """Label 0 prefers "bad", label 1 (the last) prefers "good": the judge follows label 1."""
    judge = RewardModelJudge(str(make_reward_model(tmp_path, num_labels=2)))
    assert judge.score(PROMPT, "good") == pytest.approx(REWARD, abs=1e-4)
    assert judge.compare(PROMPT, "good", "bad") == "win"


def test_reward_model_load_error_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="cannot load reward model '.*not-a-model'"):
        RewardModelJudge(str(empty))


def test_make_judge_reward_model(reward_dir: Path) -> None:
    judge = make_judge(JudgeConfig(kind="reward_model", reward_model=str(reward_dir), tie_margin=0.5))
    assert isinstance(judge, RewardModelJudge) and judge.name == "reward_model"
    assert judge.tie_margin == 0.5 and judge.device == "cpu"
    assert judge.compare(PROMPT, "good", "bad") == "win"


# ---------------------------------------------------------------------------------------------- endpoint

KEY_ENV = "ALIGNFLOW_TEST_JUDGE_KEY"
SECRET = "sk-test-5ecret-do-not-leak"
ANSWER = re.compile(r"\[Answer (A|B)\]\n(.*?)\n\[End of answer \1\]", re.DOTALL)


@dataclass
class Reply:
    status: int = 200
    content: str | None = "A"  # chat message content; None sends `raw` instead
    raw: str = ""
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ChatServer:
    """A chat-completions server on loopback; `behave(request_body) -> Reply` decides each answer."""

    url: str
    requests: list[dict] = field(default_factory=list)
    behave: Callable[[dict], Reply] = lambda body: Reply()

    def answers(self, index: int) -> tuple[str, str]:
        """(answer A, answer B) as shown in request `index`."""
        found = dict(ANSWER.findall(self.requests[index]["body"]["messages"][1]["content"]))
        return found["A"], found["B"]

    def script(self, *replies: Reply | str) -> None:
        queue = [Reply(content=r) if isinstance(r, str) else r for r in replies]
        self.behave = lambda body: queue.pop(0)


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            reply = server.behave(body)
            time.sleep(reply.delay_s)
            payload = reply.raw if reply.content is None else json.dumps({
                "id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply.content}}]})
            try:
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload.encode())))
                self.end_headers()
                self.wfile.write(payload.encode())
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def chat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    state = ChatServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def endpoint_judge(server: ChatServer, **kwargs: object) -> tuple[EndpointJudge, list[float]]:
    """A judge on `server` that records its backoff waits instead of sleeping."""
    waits: list[float] = []
    options = {"api_key_env": KEY_ENV, "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.5, **kwargs}
    return EndpointJudge(server.url, "judge-model", sleep=waits.append, **options), waits


def fair(body: dict) -> Reply:
    """Prefers the answer that says moo; tie if both or neither do."""
    found = dict(ANSWER.findall(body["messages"][1]["content"]))
    a, b = ("moo" in found["A"]), ("moo" in found["B"])
    return Reply(content="A" if a and not b else "B" if b and not a else "tie")


def test_endpoint_asks_both_orders(chat_server: ChatServer) -> None:
    chat_server.behave = fair
    judge, _ = endpoint_judge(chat_server)
    assert judge.compare(PROMPT, GOOD, WRONG) == "win"
    assert chat_server.answers(0) == (GOOD, WRONG) and chat_server.answers(1) == (WRONG, GOOD)
    assert judge.compare(PROMPT, WRONG, GOOD) == "loss"
    assert judge.compare(PROMPT, WRONG, REFUSAL) == "tie"
    first = chat_server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0
    system, user = first["body"]["messages"]
    assert system["role"] == "system" and '"A"' in system["content"] and '"tie"' in system["content"]
    assert user["role"] == "user" and "USER: What sound does a cow make?" in user["content"]
    assert "SYSTEM: You answer questions about animals." in user["content"]
    assert judge.stats == {"requests": 6, "retries": 0, "errors": 0, "inconsistent": 0}


@pytest.mark.parametrize(("policy_first", "policy_second", "verdict", "inconsistent"), [
    ("A", "B", "win", 0),  # policy preferred in both positions
    ("B", "A", "loss", 0),  # reference preferred in both positions
    ("A", "A", "tie", 1),  # always the first answer: position bias
    ("B", "B", "tie", 1),  # always the second answer
    ("tie", "tie", "tie", 0),
    ("A", "tie", "tie", 1),
    ("tie", "B", "tie", 1),
])
def test_endpoint_combines_the_two_orders(chat_server: ChatServer, policy_first: str, policy_second: str,
                                          verdict: str, inconsistent: int) -> None:
    """Replies when the policy is shown first (as A), then second (as B)."""
    chat_server.script(policy_first, policy_second)
    judge, _ = endpoint_judge(chat_server)
    assert judge.compare(PROMPT, GOOD, WRONG) == verdict
    assert judge.stats["inconsistent"] == inconsistent


def test_position_biased_judge_gives_only_ties(chat_server: ChatServer) -> None:
    chat_server.behave = lambda body: Reply(content="A")
    judge, _ = endpoint_judge(chat_server)
    verdicts = judge_pairs(judge, [PROMPT] * 3, [GOOD, WRONG, REFUSAL], [WRONG, GOOD, GOOD])
    assert verdicts == ["tie", "tie", "tie"]
    assert judge.stats["inconsistent"] == 3 and judge.stats["requests"] == 6
    assert win_rate(verdicts)["win_rate"] == 0.5


@pytest.mark.parametrize(("content", "verdict"), [
    ("A", "A"),
    (" a ", "A"),  # stripped, then upper-cased
    ("**B**", "B"),  # markdown emphasis stripped
    ('"tie"', "tie"),  # quotes stripped
    ("Tie.", "tie"),  # trailing full stop stripped, lower-cased
    ("Answer A", "A"),  # the "answer " prefix
    ("<think>hmm</think>B", "B"),  # the think block removed first
    ("<think>B</think>A", "A"),  # the verdict after the think block, not the one inside it
])
def test_parse_verdict_tolerates_formatting(content: str, verdict: str) -> None:
    assert parse_verdict(content) == verdict


@pytest.mark.parametrize("content", ["", "I prefer the first one", "A or B", "AB", "tied",
                                     "<think>A</think>"])
def test_parse_verdict_refuses_anything_else(content: str) -> None:
    assert parse_verdict(content) is None


def test_endpoint_sends_the_key_from_the_environment(chat_server: ChatServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    chat_server.script("A", "B", "A", "B")
    judge, _ = endpoint_judge(chat_server)
    judge.compare(PROMPT, GOOD, WRONG)
    assert "Authorization" not in chat_server.requests[0]["headers"]  # unset: no header
    monkeypatch.setenv(KEY_ENV, SECRET)  # read at call time, not at construction
    judge.compare(PROMPT, GOOD, WRONG)
    assert chat_server.requests[2]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(judge) and SECRET not in repr(vars(judge))


def test_endpoint_401_is_not_retried_and_the_key_stays_secret(chat_server: ChatServer,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    chat_server.behave = lambda body: Reply(status=401, content=None,
                                            raw=json.dumps({"error": f"invalid api key {SECRET}"}))
    judge, waits = endpoint_judge(chat_server)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as caught:
        judge.compare(PROMPT, GOOD, WRONG)
    message = str(caught.value)
    assert "HTTP 401" in message and chat_server.url in message and "invalid api key ***" in message
    assert SECRET not in message and SECRET not in repr(caught.value) and SECRET not in caplog.text
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert judge.stats == {"requests": 1, "retries": 0, "errors": 1, "inconsistent": 0} and waits == []


def test_endpoint_retries_a_500_then_succeeds(chat_server: ChatServer) -> None:
    chat_server.script(Reply(status=500, content=None, raw="overloaded"), "A", "B")
    judge, waits = endpoint_judge(chat_server)
    assert judge.compare(PROMPT, GOOD, WRONG) == "win"
    assert judge.stats == {"requests": 3, "retries": 1, "errors": 0, "inconsistent": 0}
    assert waits == [0.5]


def test_endpoint_backs_off_exponentially_and_honours_retry_after(chat_server: ChatServer) -> None:
    """Waits backoff_s * 2^attempt (0.5, 1.0); a 429's Retry-After of 3 s raises the first wait to 3."""
    chat_server.script(Reply(status=503, content=None), Reply(status=502, content=None), "A",
                       Reply(status=429, content=None, headers={"Retry-After": "3"}), "B")
    judge, waits = endpoint_judge(chat_server)
    assert judge.compare(PROMPT, GOOD, WRONG) == "win"
    assert waits == [0.5, 1.0, 3.0]
    assert judge.stats["requests"] == 5 and judge.stats["retries"] == 3


def test_endpoint_timeout_is_retried_then_an_error(chat_server: ChatServer) -> None:
    chat_server.behave = lambda body: Reply(content="A", delay_s=0.6)
    judge, waits = endpoint_judge(chat_server, timeout_s=0.2, max_retries=1, backoff_s=0.0)
    start = time.monotonic()
    assert judge_pairs(judge, [PROMPT], [GOOD], [WRONG]) == ["error"]
    assert time.monotonic() - start < 2.0
    assert judge.stats == {"requests": 2, "retries": 1, "errors": 1, "inconsistent": 0}
    expected = r"127\.0\.0\.1.*failed after 2 attempt\(s\): timed out after 0\.2 s"
    with pytest.raises(JudgeError, match=expected):
        judge.compare(PROMPT, GOOD, WRONG)


def test_endpoint_garbage_is_retried_then_an_error(chat_server: ChatServer) -> None:
    chat_server.behave = lambda body: Reply(content="Both answers have merits.")
    judge, waits = endpoint_judge(chat_server)
    with pytest.raises(JudgeError, match="failed after 3 attempt.*unparseable reply 'Both answers"):
        judge.compare(PROMPT, GOOD, WRONG)
    assert judge.stats == {"requests": 3, "retries": 2, "errors": 1, "inconsistent": 0}
    assert waits == [0.5, 1.0]
    chat_server.behave = lambda body: Reply(content=None, raw="<html>bad gateway</html>")
    with pytest.raises(JudgeError, match="not a chat completion"):
        judge.compare(PROMPT, GOOD, WRONG)


def test_endpoint_connection_refused_is_an_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits: list[float] = []
    judge = EndpointJudge(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, sleep=waits.append)
    with pytest.raises(JudgeError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions.*connection error"):
        judge.compare(PROMPT, GOOD, WRONG)
    assert judge.stats["requests"] == 2 and waits == [0.5]


def test_judge_pairs_marks_failed_pairs_and_win_rate_leaves_them_out(chat_server: ChatServer) -> None:
    """Pair 2 always fails (500): verdicts win, error, loss -> n = 2, 1 win + 1 loss -> 0.5, errors = 1."""

    def behave(body: dict) -> Reply:
        return Reply(status=500, content=None) if "boom" in body["messages"][1]["content"] else fair(body)

    chat_server.behave = behave
    judge, _ = endpoint_judge(chat_server, max_retries=1)
    verdicts = judge_pairs(judge, [PROMPT] * 3, [GOOD, "boom", WRONG], [WRONG, GOOD, GOOD])
    assert verdicts == ["win", "error", "loss"]
    assert judge.stats == {"requests": 6, "retries": 1, "errors": 1, "inconsistent": 0}
    stats = win_rate(verdicts)
    assert (stats["n"], stats["errors"], stats["win_rate"]) == (2.0, 1.0, 0.5)


def test_make_judge_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = JudgeConfig(kind="endpoint", endpoint_url="http://127.0.0.1:8000/v1/", endpoint_model="m",
                      api_key_env=KEY_ENV, timeout_s=5.0, max_retries=1)
    monkeypatch.setenv(KEY_ENV, SECRET)
    judge = make_judge(cfg)
    assert isinstance(judge, EndpointJudge) and judge.name == "endpoint"
    assert judge.endpoint == "http://127.0.0.1:8000/v1/chat/completions"
    assert (judge.model, judge.api_key_env, judge.timeout_s, judge.max_retries) == ("m", KEY_ENV, 5.0, 1)
    assert SECRET not in repr(judge)
    with pytest.raises(ValueError, match="http"):
        EndpointJudge("127.0.0.1:8000/v1", "m")


# ---- the instruction verifier as a judge, and judges as on-policy scorers --------------------------------


def test_verifier_judge_correct_beats_compliant_and_degenerate_loses() -> None:
    """'What is 7 times 8? Answer in at most 3 words.' 'It is 56' is right and passes (4 + 1); 'It is 57' only
    passes (0 + 1): win. 'The answer is fifty six' is right but has 5 words (degree 3/5: 4 + 0.5 * 0.6 / 1.5)
    and still beats the wrong answer that passes. A loop ('56 56 56 56') is degenerate and loses to a wrong
    answer; two right passing answers tie."""
    from alignment.instruct.instructions import Instruction
    from evaluation.judges import VerifierJudge

    prompt = [{"role": "user", "content": f"What is 7 times 8? {Instruction('word_limit', 3).text()}"}]
    judge = VerifierJudge()
    assert judge.compare(prompt, "It is 56", "It is 57") == "win"
    assert judge.compare(prompt, "The answer is fifty six", "It is 57") == "win"
    assert judge.score(prompt, "The answer is fifty six") == pytest.approx(4 + 0.5 * 0.6 / 1.5)
    assert judge.compare(prompt, "56 56 56 56", "It is 57") == "loss"
    assert judge.compare(prompt, "It is 56", "56 it is") == "tie"


def test_verifier_pass_rates_per_prompt_and_kind() -> None:
    from alignment.instruct.instructions import Instruction
    from evaluation.judges import VerifierJudge

    lower, commas = Instruction("lowercase", None).text(), Instruction("no_commas", None).text()
    prompts = [[{"role": "user", "content": f"Hi? {lower}"}], [{"role": "user", "content": f"Hi? {commas}"}],
               [{"role": "user", "content": f"Hi? {lower}"}], [{"role": "user", "content": "No instruction here."}]]
    passed, rates = VerifierJudge().pass_rates(prompts, ["hi there", "a, b", "Hi", "anything"])
    assert passed == [True, False, False, False]
    assert rates == {"all": pytest.approx(1 / 3), "lowercase": 0.5, "no_commas": 0.0}


def test_judge_scorer_counts_pairwise_wins_and_passes_scores_through() -> None:
    """A pairwise judge that prefers the shorter answer, on one prompt with answers of length 1, 2, 3:
    'a' wins both its pairs (2), 'bb' one (1), 'ccc' none (0)."""
    from evaluation.judges import JudgeScorer, VerifierJudge

    class Shorter:
        name = "shorter"

        def compare(self, prompt, policy, reference):
            return "win" if len(policy) < len(reference) else "loss" if len(policy) > len(reference) else "tie"

    prompt = [{"role": "user", "content": "q"}]
    scorer = JudgeScorer(Shorter())
    assert scorer.name == "judge:shorter"
    assert scorer.score_many([prompt] * 3, ["a", "bb", "ccc"]) == [2.0, 1.0, 0.0]
    # a prompt of other data: correctness does not apply (4), no instruction to pass (0), not degenerate
    assert JudgeScorer(VerifierJudge()).score_many([prompt], ["x"]) == [4.0]
    assert JudgeScorer(VerifierJudge()).score_many([prompt], [""]) == [-1.0]  # empty: degenerate
