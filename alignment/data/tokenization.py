"""Chat-template tokenization with loss on assistant tokens only.

Text is rendered with the model's own chat template; token ids are made per segment so the boundary
between prompt and response is exact (as TRL does: prompt and completion tokenized separately and
concatenated). Truncation keeps the end of the prompt and the start of each response.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
Message = dict[str, str]


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be used for prompt/response training."""


def render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], *, generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "use an instruct/chat model or set tokenizer.chat_template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def split_response(tokenizer: PreTrainedTokenizerBase, prompt: list[Message],
                   response: list[Message]) -> tuple[str, str]:
    """(prompt text ending with the assistant header, response text) such that their concatenation is the
    rendered conversation."""
    prompt_text = render(tokenizer, prompt, generation_prompt=True)
    full_text = render(tokenizer, prompt + response, generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise TemplateError("the chat template does not render the prompt as a prefix of the conversation; "
                            "prompt/response masking needs that property")
    return prompt_text, full_text[len(prompt_text):]


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_pairs(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *, max_prompt_tokens: int,
                 max_response_tokens: int) -> dict[str, list[list[int]]]:
    """Canonical preference rows -> {"prompt_ids", "chosen_ids", "rejected_ids"} (lists of token ids)."""
    prompts, chosens, rejecteds = [], [], []
    for row in rows:
        p_text, c_text = split_response(tokenizer, row["prompt"], row["chosen"])
        _, r_text = split_response(tokenizer, row["prompt"], row["rejected"])
        prompts.append(p_text)
        chosens.append(c_text)
        rejecteds.append(r_text)
    return {
        "prompt_ids": [ids[-max_prompt_tokens:] for ids in encode_texts(tokenizer, prompts)],
        "chosen_ids": [ids[:max_response_tokens] for ids in encode_texts(tokenizer, chosens)],
        "rejected_ids": [ids[:max_response_tokens] for ids in encode_texts(tokenizer, rejecteds)],
    }


def encode_sft(tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
               max_tokens: int) -> dict[str, list[list[int]]]:
    """Canonical SFT rows ({"messages": [...]}) -> {"input_ids", "labels"}; labels are IGNORE_INDEX except on
    assistant turns. Sequences longer than max_tokens keep their start."""
    input_ids, labels = [], []
    for row in rows:
        ids, lab = encode_conversation(tokenizer, row["messages"])
        input_ids.append(ids[:max_tokens])
        labels.append(lab[:max_tokens])
    return {"input_ids": input_ids, "labels": labels}


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt_text, response_text = split_response(tokenizer, messages[:i], [msg])
        context = prompt_text[len(rendered):]
        if not prompt_text.startswith(rendered):
            raise TemplateError("the chat template re-renders earlier turns differently; cannot mask turns")
        ctx_ids, resp_ids = encode_texts(tokenizer, [context, response_text])
        ids += ctx_ids + resp_ids
        labels += [IGNORE_INDEX] * len(ctx_ids) + resp_ids
        rendered = prompt_text + response_text
    return ids, labels


def prompt_for_generation(tokenizer: PreTrainedTokenizerBase, prompt: list[Message]) -> str:
    return render(tokenizer, prompt, generation_prompt=True)
