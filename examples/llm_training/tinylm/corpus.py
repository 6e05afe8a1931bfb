"""The shipped corpus: short sentences from a small grammar whose nouns prefer certain verbs.

The preferences (birds sing, foxes chase, robots compute) give a context model something to learn
beyond word frequencies. Regenerate with ``python -m tinylm.corpus data``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DETERMINERS = ["the", "this", "that", "every"]
ADJECTIVES = ["quick", "lazy", "red", "small", "old", "happy", "bright", "quiet"]
NOUN_VERBS = {
    "fox": ["chases", "hunts", "watches"],
    "dog": ["chases", "follows", "guards"],
    "cat": ["watches", "ignores", "chases"],
    "bird": ["sings", "flies", "nests"],
    "robot": ["computes", "builds", "repairs"],
    "farmer": ["plants", "feeds", "guards"],
    "child": ["plays", "reads", "follows"],
}
INTRANSITIVE = {"sings", "flies", "nests", "computes", "plays", "reads"}
PLACES = ["in the garden", "near the river", "under the tree", "on the hill", "at night", "all day"]


def noun_phrase(rng: np.random.Generator, noun: str) -> str:
    adjective = f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} " if rng.random() < 0.6 else ""
    return f"{DETERMINERS[rng.integers(len(DETERMINERS))]} {adjective}{noun}"


def sentence(rng: np.random.Generator) -> str:
    nouns = list(NOUN_VERBS)
    subject = nouns[rng.integers(len(nouns))]
    verb = NOUN_VERBS[subject][rng.integers(3)]
    words = [noun_phrase(rng, subject), verb]
    if verb not in INTRANSITIVE:
        words.append(noun_phrase(rng, nouns[rng.integers(len(nouns))]))
    if rng.random() < 0.5:
        words.append(PLACES[rng.integers(len(PLACES))])
    return " ".join(words) + " ."


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [sentence(rng) for _ in range(n)]


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(make_corpus(5000)) + "\n")
