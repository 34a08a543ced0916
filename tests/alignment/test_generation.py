"""Batched generation (alignment/models/generation.py): greedy answers token for token equal to `model.generate`'s,
one prompt at a time and as a padded batch, with rows finishing at different steps; seeded sampling."""

from __future__ import annotations

import torch

from alignment.models.generation import decode, decodes_itself, generate, left_padded


def tiny_llama(vocab: int = 97) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128))
    return model.eval()


def prompts(vocab: int = 97) -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (5, 9, 2, 14, 7, 11)]


def frequent_token(model: torch.nn.Module, ids: list[list[int]], new: int) -> int:
    """A token that plain greedy decoding emits in the middle of several rows: as EOS, rows stop at
    different steps."""
    input_ids, attention = left_padded(ids, 0)
    out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=new, do_sample=False,
                         pad_token_id=0, eos_token_id=None)[:, input_ids.shape[1]:]
    counts = torch.bincount(out[:, 1:-1].flatten(), minlength=97)
    counts[0] = 0
    return int(counts.argmax())


def reference(model: torch.nn.Module, ids: list[list[int]], new: int, eos: int) -> torch.Tensor:
    input_ids, attention = left_padded(ids, 0)
    out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=new, do_sample=False,
                         pad_token_id=0, eos_token_id=eos)
    return out[:, input_ids.shape[1]:]


def test_greedy_decode_equals_model_generate_as_a_batch_and_one_at_a_time() -> None:
    model, ids, new = tiny_llama(), prompts(), 12
    eos = frequent_token(model, ids, new)
    input_ids, attention = left_padded(ids, 0)
    with torch.no_grad():
        ours = decode(model, input_ids, attention, max_new_tokens=new, eos_id=eos, pad_id=0)
    batch = reference(model, ids, new, eos)
    assert torch.equal(ours, batch)
    stops = [(row == eos).nonzero()[0, 0].item() if (row == eos).any() else None for row in ours]
    assert len({s for s in stops if s is not None}) >= 2 and None in stops  # rows left at different steps
    for i, one in enumerate(ids):
        alone = reference(model, [one], new, eos)[0]
        assert torch.equal(ours[i, :alone.shape[0]], alone)
        assert (ours[i, alone.shape[0]:] == 0).all()


def test_generate_answers_equal_one_prompt_at_a_time(quick_tokenizer) -> None:
    """The chat-prompt entry point: length-sorted batches of 3, decoded by `decode`, give each prompt the
    answer `model.generate` gives it alone."""
    from alignment.data.tokenization import encode_texts, prompt_for_generation
    from alignment.models.tiny import build_model

    tok = quick_tokenizer
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=256, seed=0).eval()
    assert decodes_itself(model)
    chats = [[{"role": "user", "content": text}] for text in
             ("What do cats eat?", "Name a bird.", "Tell me about the fox and the dog, in one line.", "Hi", "Why?")]
    answers = generate(model, tok, chats, max_new_tokens=10, batch_size=3)
    for chat, answer in zip(chats, answers, strict=True):
        ids = torch.tensor([encode_texts(tok, [prompt_for_generation(tok, chat)])[0]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        assert answer == [tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()]


def test_sampling_is_seeded_and_gives_num_samples_per_prompt(quick_tokenizer) -> None:
    from alignment.models.tiny import build_model

    tok = quick_tokenizer
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=256, seed=0)
    chats = [[{"role": "user", "content": t}] for t in ("a b c", "dogs", "the fox")]
    kwargs = {"max_new_tokens": 8, "batch_size": 4, "num_samples": 2, "do_sample": True, "temperature": 1.2,
              "top_p": 0.95}
    first = generate(model, tok, chats, seed=5, **kwargs)
    assert first == generate(model, tok, chats, seed=5, **kwargs)
    assert [len(a) for a in first] == [2, 2, 2]
    assert first != generate(model, tok, chats, seed=6, **kwargs)


def test_other_logits_processors_go_through_model_generate() -> None:
    model = tiny_llama()
    model.generation_config.repetition_penalty = 1.3
    assert not decodes_itself(model)
