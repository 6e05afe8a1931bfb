"""The shipped data: assistant replies from a small grammar, and preference pairs over them.

Each reply is ``opener , body . closer .`` with every slot drawn from a helpful or an unhelpful
phrase list. A hidden per-word score (``gold_score``) stands in for what human raters want; the
preference pairs are labelled by a noisy Bradley-Terry draw on it, so the reward model has to
learn it from comparisons, and eval can check that PPO improved the gold score, not only the
learned reward. Regenerate the files with ``python -m tinyrlhf.corpus data``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SLOTS = {
    "opener": (
        ["sure", "of course", "happy to help", "great question"],
        ["ugh", "no", "whatever", "not again"],
    ),
    "body": (
        ["here is a clear answer", "here are the steps", "this should work for you", "try the example below"],
        ["figure it out yourself", "i do not know", "read the manual", "that is a silly question"],
    ),
    "closer": (
        ["hope this helps", "let me know if it fails", "good luck"],
        ["stop asking", "go away", "do not bother me again"],
    ),
}
GOLD_WORD_SCORES = {
    **dict.fromkeys(["sure", "course", "happy", "help", "great", "clear", "steps", "example", "hope",
                     "helps", "luck", "work"], 1.0),
    **dict.fromkeys(["ugh", "no", "whatever", "again", "yourself", "manual", "silly", "stop", "away",
                     "bother"], -1.0),
}
PREFERENCE_TEMPERATURE = 1.5  # Bradley-Terry noise: raters disagree on close pairs


def gold_score(words: list[str]) -> float:
    """What the simulated raters value: helpful words count +1, rude ones -1."""
    return float(sum(GOLD_WORD_SCORES.get(w, 0.0) for w in words))


def sample_reply(rng: np.random.Generator, p_helpful: float = 0.5) -> str:
    parts = []
    for slot, end in (("opener", ","), ("body", "."), ("closer", ".")):
        good, bad = SLOTS[slot]
        pool = good if rng.random() < p_helpful else bad
        parts.append(f"{pool[rng.integers(len(pool))]} {end}")
    return " ".join(parts)


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [sample_reply(rng) for _ in range(n)]


def make_preferences(n: int, seed: int = 1) -> list[dict[str, str]]:
    """Pairs of replies; ``chosen`` won a noisy Bradley-Terry draw on the gold score."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        a, b = sample_reply(rng), sample_reply(rng)
        if a == b:
            continue
        margin = (gold_score(a.split()) - gold_score(b.split())) / PREFERENCE_TEMPERATURE
        a_wins = rng.random() < 1.0 / (1.0 + np.exp(-margin))
        pairs.append({"chosen": a, "rejected": b} if a_wins else {"chosen": b, "rejected": a})
    return pairs


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(make_corpus(4000)) + "\n")
    lines = [json.dumps(p) for p in make_preferences(2000)]
    (folder / "prefs.jsonl").write_text("\n".join(lines) + "\n")


def find_file(path: str | Path, name: str) -> Path:
    """An input is a file, or a directory holding ``name`` (or a single file)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / name).is_file():
        return path / name
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if len(files) == 1:
        return files[0]
    raise FileNotFoundError(f"{path}: expected {name} or a single file, found {[p.name for p in files]}")


if __name__ == "__main__":
    write_data(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
