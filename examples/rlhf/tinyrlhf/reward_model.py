"""A linear Bradley-Terry reward model over the SFT policy's vocabulary (bag of words)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RewardModel:
    vocab: list[str]
    weights: np.ndarray

    def features(self, words_list: list[list[str]]) -> np.ndarray:
        index = {w: i for i, w in enumerate(self.vocab)}
        x = np.zeros((len(words_list), len(self.vocab)))
        for row, words in enumerate(words_list):
            for w in words:
                if w in index:
                    x[row, index[w]] += 1.0
        return x

    def score(self, words_list: list[list[str]]) -> np.ndarray:
        return self.features(words_list) @ self.weights

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "weights.npy", self.weights)
        (folder / "vocab.json").write_text(json.dumps(self.vocab))

    @classmethod
    def load(cls, folder: Path) -> RewardModel:
        return cls(json.loads((Path(folder) / "vocab.json").read_text()), np.load(Path(folder) / "weights.npy"))


def pairwise_accuracy(model: RewardModel, chosen: list[list[str]], rejected: list[list[str]]) -> float:
    """Share of pairs ranked right; a tie counts half (a coin flip)."""
    margin = model.score(chosen) - model.score(rejected)
    return float(np.mean(margin > 0) + 0.5 * np.mean(margin == 0))
