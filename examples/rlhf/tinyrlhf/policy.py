"""A word-bigram language model with softmax logits: the policy that SFT trains and PPO tunes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOS, EOS = "<s>", "</s>"
MAX_TOKENS = 30


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class BigramPolicy:
    """``logits[prev, next]``: the distribution over the next word given the previous one."""

    vocab: list[str]
    logits: np.ndarray

    @classmethod
    def empty(cls, vocab: list[str]) -> BigramPolicy:
        return cls(vocab, np.zeros((len(vocab), len(vocab))))

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index[BOS], *(index[w] for w in text.split()), index[EOS]]

    def sample(self, rng: np.random.Generator, n: int) -> list[list[int]]:
        """n token sequences (BOS first, EOS last unless cut at MAX_TOKENS)."""
        probs = softmax(self.logits)
        cumulative = np.cumsum(probs, axis=1)
        bos, eos = self.index[BOS], self.index[EOS]
        sequences = []
        for _ in range(n):
            seq = [bos]
            while len(seq) <= MAX_TOKENS and seq[-1] != eos:
                nxt = int(np.searchsorted(cumulative[seq[-1]], rng.random() * cumulative[seq[-1], -1]))
                seq.append(min(nxt, len(self.vocab) - 1))
            sequences.append(seq)
        return sequences

    def words(self, seq: list[int]) -> list[str]:
        return [self.vocab[t] for t in seq if self.vocab[t] not in (BOS, EOS)]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "logits.npy", self.logits)
        (folder / "vocab.json").write_text(json.dumps(self.vocab))

    @classmethod
    def load(cls, folder: Path) -> BigramPolicy:
        return cls(json.loads((Path(folder) / "vocab.json").read_text()), np.load(Path(folder) / "logits.npy"))


def transition_counts(policy: BigramPolicy, lines: list[str]) -> np.ndarray:
    counts = np.zeros_like(policy.logits)
    for line in lines:
        seq = policy.encode(line)
        np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    return counts


def sequence_kl(policy: BigramPolicy, reference: BigramPolicy, sequences: list[list[int]]) -> float:
    """Mean over sequences of sum_t KL(policy(.|s_t) || reference(.|s_t)) at the visited states."""
    logp, logq = log_softmax(policy.logits), log_softmax(reference.logits)
    per_state = (np.exp(logp) * (logp - logq)).sum(axis=1)
    return float(np.mean([per_state[seq[:-1]].sum() for seq in sequences]))


class Adam:
    """Adam on one array, enough for these small models."""

    def __init__(self, shape: tuple[int, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.lr, (self.b1, self.b2) = lr, betas
        self.m, self.v, self.t = np.zeros(shape), np.zeros(shape), 0

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad**2
        m_hat, v_hat = self.m / (1 - self.b1**self.t), self.v / (1 - self.b2**self.t)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
