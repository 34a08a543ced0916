"""Train/eval contamination: how many items of an eval set share a word n-gram with the training prompts.

The measure follows the n-gram overlap checks of GPT-3 (Brown et al. 2020, appendix C) in a simple form: text
is lower-cased and split into words (runs of letters and digits); an eval item is contaminated when any of its
word n-grams also occurs in some training prompt. An item shorter than n words is contaminated when its whole
word sequence occurs, contiguously, in a training prompt (so a short question copied from training is caught
too). The share of contaminated items is reported per eval set; the promotion gate caps the largest share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


class NgramIndex:
    """The word n-grams of the training texts, plus the k-grams (k < n) needed for short eval items."""

    def __init__(self, train_texts: Iterable[str], n: int) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self._train = [words(t) for t in train_texts]
        self._grams: dict[int, set[tuple[str, ...]]] = {}

    def grams(self, k: int) -> set[tuple[str, ...]]:
        if k not in self._grams:
            self._grams[k] = set().union(*(ngrams(t, k) for t in self._train)) if self._train else set()
        return self._grams[k]

    def contaminated(self, text: str) -> bool:
        tokens = words(text)
        if not tokens:
            return False
        k = min(self.n, len(tokens))
        return not ngrams(tokens, k).isdisjoint(self.grams(k))


def contamination(train_texts: Iterable[str], eval_sets: dict[str, list[str]], n: int) -> dict[str, float]:
    """Share of each eval set's items that share an n-gram with the training texts (0.0 for an empty set)."""
    index = NgramIndex(train_texts, n)
    return {name: (sum(index.contaminated(t) for t in items) / len(items) if items else 0.0)
            for name, items in eval_sets.items()}
