"""Chat-template tokenization: prompt/response boundaries, assistant-only labels, truncation direction."""

from __future__ import annotations

import copy

import pytest

from alignment.data.tokenization import (
    IGNORE_INDEX,
    TemplateError,
    encode_conversation,
    encode_pairs,
    encode_sft,
    render,
    split_response,
)

SYSTEM = {"role": "system", "content": "You answer questions about animals."}
USER = {"role": "user", "content": "What sound does a cow make?"}
GOOD = {"role": "assistant", "content": "The cow says moo."}
BAD = {"role": "assistant", "content": "Sorry, I do not know."}
USER2 = {"role": "user", "content": "What colour is a cow?"}
GOOD2 = {"role": "assistant", "content": "The cow is brown."}
PAIR = {"prompt": [SYSTEM, USER], "chosen": [GOOD], "rejected": [BAD]}
HEADER = "<|im_start|>assistant\n"
END = "<|im_end|>\n"


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) spans where labels are not IGNORE_INDEX."""
    runs, start = [], None
    for i, lab in enumerate([*labels, IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_split_response_is_prefix_and_rest(quick_tokenizer) -> None:
    """ChatML: prompt = '...<|im_start|>assistant\\n', response = content + '<|im_end|>\\n'."""
    prompt_text, response_text = split_response(quick_tokenizer, [SYSTEM, USER], [GOOD])
    assert prompt_text.endswith(HEADER)
    assert response_text == GOOD["content"] + END
    assert prompt_text + response_text == render(quick_tokenizer, [SYSTEM, USER, GOOD], generation_prompt=False)


def test_encode_pairs_boundaries(quick_tokenizer) -> None:
    tok = quick_tokenizer
    enc = encode_pairs(tok, [PAIR], max_prompt_tokens=512, max_response_tokens=512)
    assert set(enc) == {"prompt_ids", "chosen_ids", "rejected_ids"}
    header = ids_of(tok, HEADER)
    prompt_ids = enc["prompt_ids"][0]
    assert prompt_ids[-len(header):] == header
    assert tok.decode(prompt_ids) == render(tok, [SYSTEM, USER], generation_prompt=True)
    assert tok.decode(enc["chosen_ids"][0]) == GOOD["content"] + END
    assert tok.decode(enc["rejected_ids"][0]) == BAD["content"] + END
    # the response ends with EOS then newline: the model learns to stop
    assert enc["chosen_ids"][0][-2:] == [tok.eos_token_id, ids_of(tok, "\n")[0]]


def test_encode_pairs_truncation_keeps_prompt_end_and_response_start(quick_tokenizer) -> None:
    tok = quick_tokenizer
    full = encode_pairs(tok, [PAIR], max_prompt_tokens=512, max_response_tokens=512)
    short = encode_pairs(tok, [PAIR], max_prompt_tokens=5, max_response_tokens=3)
    assert len(full["prompt_ids"][0]) > 5 and len(full["chosen_ids"][0]) > 3 and len(full["rejected_ids"][0]) > 3
    assert short["prompt_ids"][0] == full["prompt_ids"][0][-5:]  # end kept: still ends in the header
    assert short["chosen_ids"][0] == full["chosen_ids"][0][:3]
    assert short["rejected_ids"][0] == full["rejected_ids"][0][:3]


def test_encode_sft_single_turn_labels_only_the_answer(quick_tokenizer) -> None:
    tok = quick_tokenizer
    enc = encode_sft(tok, [{"messages": [SYSTEM, USER, GOOD]}], max_tokens=512)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    assert len(ids) == len(labels)
    assert tok.decode(ids) == render(tok, [SYSTEM, USER, GOOD], generation_prompt=False)
    [(start, end)] = labelled_runs(labels)
    assert end == len(ids)
    assert tok.decode(ids[:start]) == render(tok, [SYSTEM, USER], generation_prompt=True)
    assert tok.decode(ids[start:]) == GOOD["content"] + END
    assert labels[:start] == [IGNORE_INDEX] * start
    assert labels[start:] == ids[start:]


def test_encode_sft_multi_turn_trains_both_answers_and_masks_users(quick_tokenizer) -> None:
    tok = quick_tokenizer
    messages = [SYSTEM, USER, GOOD, USER2, GOOD2]
    ids, labels = encode_conversation(tok, messages)
    assert encode_sft(tok, [{"messages": messages}], max_tokens=512) == {"input_ids": [ids], "labels": [labels]}
    assert tok.decode(ids) == render(tok, messages, generation_prompt=False)
    runs = labelled_runs(labels)
    assert len(runs) == 2
    (s1, e1), (s2, e2) = runs
    assert tok.decode(ids[s1:e1]) == GOOD["content"] + END
    assert tok.decode(ids[s2:e2]) == GOOD2["content"] + END
    assert e2 == len(ids)
    # everything between the answers (second user turn + assistant header) is masked
    assert tok.decode(ids[e1:s2]) == f"<|im_start|>user\n{USER2['content']}{END}{HEADER}"
    for a, b in runs:
        assert labels[a:b] == ids[a:b]
    masked = [i for i, lab in enumerate(labels) if lab == IGNORE_INDEX]
    assert masked == list(range(0, s1)) + list(range(e1, s2))


def test_encode_sft_truncation_keeps_the_start(quick_tokenizer) -> None:
    tok = quick_tokenizer
    row = {"messages": [SYSTEM, USER, GOOD]}
    full = encode_sft(tok, [row], max_tokens=512)
    short = encode_sft(tok, [row], max_tokens=7)
    assert short["input_ids"][0] == full["input_ids"][0][:7]
    assert short["labels"][0] == full["labels"][0][:7]


def test_split_response_without_chat_template_raises(quick_tokenizer) -> None:
    tok = copy.deepcopy(quick_tokenizer)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        split_response(tok, [USER], [GOOD])
    with pytest.raises(TemplateError):
        encode_pairs(tok, [PAIR], max_prompt_tokens=8, max_response_tokens=8)


def test_template_that_does_not_render_prompt_as_prefix_is_refused(quick_tokenizer) -> None:
    """A template that appends something after the last message breaks prompt/response masking."""
    tok = copy.deepcopy(quick_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}<|im_end|>"
    with pytest.raises(TemplateError, match="prefix"):
        split_response(tok, [USER], [GOOD])
