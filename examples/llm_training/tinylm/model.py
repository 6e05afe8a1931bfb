"""A fixed-context MLP language model (Bengio et al. 2003) with hand-written backprop."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class MlpLM:
    """Embed the last ``context`` tokens, one tanh layer, softmax over the vocabulary."""

    vocab: list[str]
    context: int
    params: dict[str, np.ndarray]

    @classmethod
    def init(cls, vocab: list[str], context: int = 3, dim: int = 16, hidden: int = 64, seed: int = 0) -> MlpLM:
        rng = np.random.default_rng(seed)
        v = len(vocab)
        params = {"emb": rng.normal(0, 0.1, (v, dim)),
                  "w1": rng.normal(0, 1 / np.sqrt(context * dim), (context * dim, hidden)), "b1": np.zeros(hidden),
                  "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, v)), "b2": np.zeros(v)}
        return cls(vocab, context, params)

    def windows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(contexts, targets) for every position; the stream is padded with end-of-sentence (id 0)."""
        padded = np.concatenate([np.zeros(self.context, dtype=ids.dtype), ids])
        ctx = np.stack([padded[i: i + len(ids)] for i in range(self.context)], axis=1)
        return ctx, ids

    def forward(self, ctx: np.ndarray) -> tuple[np.ndarray, tuple]:
        p = self.params
        x = p["emb"][ctx].reshape(len(ctx), -1)
        h = np.tanh(x @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"], (x, h)

    def loss_and_grads(self, ctx: np.ndarray, targets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        p = self.params
        logits, (x, h) = self.forward(ctx)
        logp = log_softmax(logits)
        n = len(targets)
        loss = float(-logp[np.arange(n), targets].mean())
        dlogits = np.exp(logp)
        dlogits[np.arange(n), targets] -= 1.0
        dlogits /= n
        dh = (dlogits @ p["w2"].T) * (1 - h**2)
        dx = dh @ p["w1"].T
        demb = np.zeros_like(p["emb"])
        np.add.at(demb, ctx.reshape(-1), dx.reshape(-1, p["emb"].shape[1]))
        return loss, {"emb": demb, "w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dlogits, "b2": dlogits.sum(0)}

    def nll(self, ids: np.ndarray) -> float:
        """Mean negative log-likelihood per token over a whole stream."""
        ctx, targets = self.windows(ids)
        logp = log_softmax(self.forward(ctx)[0])
        return float(-logp[np.arange(len(targets)), targets].mean())

    def generate(self, prompt: list[int], max_tokens: int, rng: np.random.Generator,
                 temperature: float = 1.0) -> list[int]:
        ids = list(prompt)
        for _ in range(max_tokens):
            ctx = ([0] * self.context + ids)[-self.context:]
            logits = self.forward(np.array([ctx]))[0][0] / max(temperature, 1e-3)
            probs = np.exp(log_softmax(logits))
            nxt = int(rng.choice(len(probs), p=probs))
            ids.append(nxt)
            if nxt == 0:
                break
        return ids[len(prompt):]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", **self.params)
        (folder / "config.json").write_text(json.dumps({"vocab": self.vocab, "context": self.context}))

    @classmethod
    def load(cls, folder: Path) -> MlpLM:
        config = json.loads((Path(folder) / "config.json").read_text())
        with np.load(Path(folder) / "weights.npz") as data:
            params = {k: data[k] for k in data.files}
        return cls(config["vocab"], config["context"], params)


class Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        self.lr, self.t = lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g**2
            m_hat, v_hat = self.m[k] / (1 - 0.9**self.t), self.v[k] / (1 - 0.999**self.t)
            params[k] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
