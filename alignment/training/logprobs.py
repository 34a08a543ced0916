"""Batching and sequence log-probabilities, kept apart from the loss maths.

Two layouts of a preference batch, both giving `sequence_logps` -> per-response sums and token counts of
log p(response token | prefix), chosen rows first, then rejected:

- concatenated (`collate_pairs`): rows [chosen_1..chosen_B, rejected_1..rejected_B], each `prompt +
  response`, right-padded, labels masked (IGNORE_INDEX) on prompt and padding. The prompt is encoded twice.
- prefix-shared (`collate_shared_pairs`, what training uses): one row per pair, `prompt + chosen + rejected`,
  with position ids restarting after the prompt for the rejected response and a 4D attention mask in which
  rejected tokens see the prompt and the earlier rejected tokens but never the chosen ones. Each response
  token is predicted from the logits of the position before it in its own branch (the first rejected token
  from the last prompt token), so the log-probs equal the concatenated layout's while the prompt is encoded
  once per pair: for HH-RLHF-like pairs (prompt ~200 tokens, responses ~120) that is ~30 % fewer tokens.

Either layout (and an SFT batch) is collated right-padded; where the model's runtime plan packs rows and the model
runs alignflow's CPU attention (alignment/kernels/attention.py), `token_logprobs` hands it the rows packed into one row
without the padding (`pack_rows`), so the linear layers see only real tokens (docs/performance.md, "Padding-free
rows"). Computing log-probs never changes a model: the plan was applied when the stage set the model up
(alignment/kernels/runtime_plan.py); here it is only read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignment.data.tokenization import IGNORE_INDEX
from alignment.kernels.attention import SEGMENTS, takes_packed_rows
from alignment.kernels.lm_head import chunked_token_logps, compiled, final_hidden_states, linear_head, unwrap
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan, plan_of


@dataclass(frozen=True)
class SequenceLogps:
    sum: torch.Tensor  # (N,) summed log-probs of the labelled tokens
    count: torch.Tensor  # (N,) number of labelled tokens
    # of a prefix-shared batch collated with score_prompt=True: the prompts' own tokens (all but the first)
    prompt: SequenceLogps | None = None

    @property
    def mean(self) -> torch.Tensor:  # (N,)
        return self.sum / self.count.clamp(min=1)

    def split(self) -> tuple[SequenceLogps, SequenceLogps]:
        """First and second half of the rows (chosen, rejected of a concatenated pair batch)."""
        half = self.sum.shape[0] // 2
        return (SequenceLogps(self.sum[:half], self.count[:half]),
                SequenceLogps(self.sum[half:], self.count[half:]))


def pad_batch(input_ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row. Returns input_ids, attention_mask, labels: (N, T) each."""
    width = max(len(ids) for ids in input_ids)
    ids_t = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    lab_t = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask_t = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(input_ids, labels, strict=True)):
        ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        lab_t[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        mask_t[i, : len(ids)] = 1
    return {"input_ids": ids_t, "attention_mask": mask_t, "labels": lab_t}


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Preference rows (prompt_ids, chosen_ids, rejected_ids[, ref_*]) -> one concatenated batch of 2B rows."""
    seqs, labels = [], []
    for key in ("chosen_ids", "rejected_ids"):
        for row in rows:
            seqs.append(row["prompt_ids"] + row[key])
            labels.append([IGNORE_INDEX] * len(row["prompt_ids"]) + row[key])
    batch = pad_batch(seqs, labels, pad_id)
    if "ref_chosen_logps" in rows[0]:
        batch["ref_chosen_logps"] = torch.tensor([r["ref_chosen_logps"] for r in rows], dtype=torch.float32)
        batch["ref_rejected_logps"] = torch.tensor([r["ref_rejected_logps"] for r in rows], dtype=torch.float32)
    return batch


def collate_shared_pairs(rows: list[dict], pad_id: int, score_prompt: bool = False) -> dict[str, torch.Tensor]:
    """Preference rows -> one prefix-shared row per pair (see the module docstring).

    Returns input_ids and position_ids (B, T); attention_mask (B, 1, T, T), additive float (0 = attend,
    dtype min = blocked; padding queries attend to themselves only, so no row is all-blocked); and, for the
    M labelled tokens of all responses: `pred_index` (M,) flat index (b * T + t) of the position whose logits
    predict the token, `target_ids` (M,), `segment` (M,) = b for a chosen token and B + b for a rejected one;
    `row_lengths` (B,) and `num_tokens` (), the tokens of each row and of all.
    With `score_prompt`, prompt tokens 1..P-1 are scored too, as segment 2B + b (TRL's ORPO NLL term).
    """
    B = len(rows)
    lengths = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    T = max(lengths)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    allowed = torch.zeros((B, T, T), dtype=torch.bool)
    causal = torch.ones((T, T), dtype=torch.bool).tril()
    pred, target, segment = [], [], []
    for b, row in enumerate(rows):
        p, c, r = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
        P, C, R = len(p), len(c), len(r)
        n = P + C + R
        input_ids[b, :n] = torch.tensor(p + c + r, dtype=torch.long)
        position_ids[b, :P + C] = torch.arange(P + C)
        position_ids[b, P + C:n] = torch.arange(P, P + R)
        allowed[b, :n, :n] = causal[:n, :n]
        allowed[b, P + C:n, P:P + C] = False  # rejected never sees chosen
        idx = torch.arange(n, T)
        allowed[b, idx, idx] = True  # padding queries: themselves only
        base = b * T
        pred += [base + P - 1 + j for j in range(C)]  # chosen token j from position P-1+j
        pred += [base + P - 1] + [base + P + C + j - 1 for j in range(1, R)]  # rejected: from the prompt's end
        target += c + r
        segment += [b] * C + [B + b] * R
        if score_prompt:
            pred += [base + j for j in range(P - 1)]
            target += p[1:]
            segment += [2 * B + b] * (P - 1)
    mask = torch.zeros((B, 1, T, T), dtype=torch.float32)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(torch.float32).min)
    batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
             "pred_index": torch.tensor(pred, dtype=torch.long), "target_ids": torch.tensor(target, dtype=torch.long),
             "segment": torch.tensor(segment, dtype=torch.long),
             "num_tokens": torch.tensor(sum(lengths), dtype=torch.long),
             "row_lengths": torch.tensor(lengths, dtype=torch.long)}
    if score_prompt:
        batch["prompt_scored"] = torch.tensor(True)
    if "ref_chosen_logps" in rows[0]:
        batch["ref_chosen_logps"] = torch.tensor([r["ref_chosen_logps"] for r in rows], dtype=torch.float32)
        batch["ref_rejected_logps"] = torch.tensor([r["ref_rejected_logps"] for r in rows], dtype=torch.float32)
    return batch


def collate_sft(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    return pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id)


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, full_logits: bool = False) -> SequenceLogps:
    """Summed log-probs of the labelled tokens of every row. Next-token alignment: logits at t predict t+1.
    A prefix-shared batch (it has `pred_index`) gives 2B rows: B chosen, then B rejected.

    The LM head runs only at the predicting positions, in chunks recomputed in the backward pass
    (alignment/kernels/lm_head.py), wherever the model allows it; `full_logits` (or the model's runtime plan's) forces
    the plain path (the full (N, T, V) logits), which gives the same values."""
    if "pred_index" in batch:
        return shared_sequence_logps(model, batch, full_logits=full_logits)
    labels = batch["labels"][:, 1:]  # (N, T-1)
    mask = labels != IGNORE_INDEX
    rows, cols = mask.nonzero(as_tuple=True)  # (M,) row and position of each labelled token, row-major
    pred_index = rows * batch["input_ids"].shape[1] + cols  # flat index of the predicting position
    token_logps = token_logprobs(model, batch, pred_index, labels[mask], full_logits)  # (M,)
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, rows, token_logps)
    return SequenceLogps(sum=sums, count=mask.sum(-1))


def shared_sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                          full_logits: bool = False) -> SequenceLogps:
    """`sequence_logps` of a prefix-shared batch: log-softmax only at the predicting positions."""
    B = batch["input_ids"].shape[0]
    token_logps = token_logprobs(model, batch, batch["pred_index"], batch["target_ids"], full_logits)  # (M,)
    rows = 3 * B  # chosen, rejected, prompt (the last B stay empty unless the prompt is scored)
    sums = torch.zeros(rows, dtype=token_logps.dtype, device=token_logps.device).index_add(
        0, batch["segment"], token_logps)
    counts = torch.zeros(rows, dtype=torch.long, device=token_logps.device).index_add(
        0, batch["segment"], torch.ones_like(batch["segment"]))
    prompt = SequenceLogps(sums[2 * B:], counts[2 * B:]) if "prompt_scored" in batch else None
    return SequenceLogps(sum=sums[:2 * B], count=counts[:2 * B], prompt=prompt)


def token_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor], pred_index: torch.Tensor,
                   target: torch.Tensor, full_logits: bool = False) -> torch.Tensor:
    """(M,) fp32 log p(target_i | prefix) read at flat positions `pred_index` (b * T + t) of the batch. Reads the
    model's runtime plan (alignment/kernels/runtime_plan.py; `PLAIN` where none was applied) and changes nothing: where
    the plan packs rows and the model runs alignflow's CPU attention, the rows go through the model packed into
    one row without padding (`pack_rows`); the values are those of the padded batch, to float rounding."""
    plan = plan_of(model)
    full_logits = full_logits or plan.full_logits
    head = None if full_logits else linear_head(model)
    inner = unwrap(model)
    packs = (not full_logits and plan.pack_rows and inner is not None and takes_packed_rows(inner)
             and not compiled(model))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    if packs and (packed := pack_rows(batch)) is not None:
        inputs, new_index = packed
        pred_index = new_index[pred_index]
    if head is not None:
        hidden = final_hidden_states(model, head, inputs)  # (B, T, H)
        if hidden is not None:
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pred_index)  # (M, H)
            return chunked_token_logps(picked, head.weight, head.bias, target, onednn=plan.onednn_linear)
    logits = model(**inputs).logits  # (B, T, V)
    picked = logits.reshape(-1, logits.shape[-1]).index_select(0, pred_index).float()  # (M, V)
    return -F.cross_entropy(picked, target, reduction="none")


def pack_rows(batch: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor] | None:
    """The batch's rows as one row without padding, for alignflow's CPU attention (alignment/kernels/attention.py).

    A batch is right-padded: an SFT batch has a (B, T) attention mask, a prefix-shared one `row_lengths` and its
    (B, 1, T, T) mask. Returns the model's inputs — input_ids and position_ids (1, N), N the batch's real tokens,
    an all-ones attention mask, and under `SEGMENTS` the rows' offsets in the packed row and each row's own mask (None:
    causal) — and (B * T,) the packed position of each flat position b * T + t (-1 at padding). None where there
    is no padding to drop or the batch is not of that form (left padding, say): it then runs as it is."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B, T = ids.shape
    steps = torch.arange(T, device=ids.device)
    if mask.dim() == 2:
        lengths = mask.sum(-1)  # (B,)
        if not torch.equal(mask.bool(), steps[None] < lengths[:, None]):
            return None  # not right-padded
        row_masks: list[torch.Tensor | None] = [None] * B  # causal within each row
    elif mask.dim() == 4 and "row_lengths" in batch:
        lengths = batch["row_lengths"]
        row_masks = [mask[b:b + 1, :, :n, :n] for b, n in enumerate(lengths.tolist())]  # (1, 1, n, n) each
    else:
        return None
    keep = (steps[None] < lengths[:, None]).reshape(-1)  # (B * T,) real tokens
    if bool(keep.all()) or not bool(keep.any()):
        return None
    positions = batch.get("position_ids")
    positions = steps.expand(B, T) if positions is None else positions
    offsets = [0] + lengths.cumsum(0).tolist()
    packed_ids = ids.reshape(-1)[keep][None]  # (1, N)
    # an all-ones padding mask: with none, transformers would read the restarting position ids as packed sequences
    # and build a (1, 1, N, N) block mask that the attention never reads (N = 19,200 tokens: 369 MB)
    inputs = {"input_ids": packed_ids, "position_ids": positions.reshape(-1)[keep][None],
              "attention_mask": torch.ones_like(packed_ids), SEGMENTS: (offsets, row_masks)}
    new_index = torch.where(keep, keep.long().cumsum(0) - 1, -1)  # (B * T,)
    return inputs, new_index


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens in a batch (of a prefix-shared batch: prompt + chosen + rejected per pair)."""
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    return int(batch["attention_mask"].sum())


@torch.no_grad()
def reference_logps(model: torch.nn.Module, rows: list[dict], pad_id: int, batch_size: int,
                    device: torch.device | str = "cpu", plan: RuntimePlan | None = None) -> tuple[list[float], list[float]]:
    """Summed log-probs of chosen and rejected responses under a frozen reference model, for every row; with
    `plan`, the model is first set up as it says (alignment/kernels/runtime_plan.py), else it runs as it is.

    Computed once before preference training and stored with the prepared data, so the reference model is
    not resident while the policy trains."""
    if plan is not None:
        apply_plan(model, plan)
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(rows), batch_size):
        batch = collate_shared_pairs(rows[start:start + batch_size], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = sequence_logps(model, batch).split()
        chosen += c.sum.tolist()
        rejected += r.sum.tolist()
    return chosen, rejected
