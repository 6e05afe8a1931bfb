"""Stage reward: train the reward model on preference pairs; report held-out pairwise accuracy."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tinyrlhf.corpus import find_file
from tinyrlhf.policy import Adam
from tinyrlhf.reward_model import RewardModel, pairwise_accuracy
from tinyrlhf.signals import check_scale, log, write_metrics

STEPS = {"demo": 200, "full": 2000}
LOG_EVERY = {"demo": 20, "full": 100}
L2 = 1e-3


def bradley_terry_loss(model: RewardModel, diff: np.ndarray) -> tuple[float, np.ndarray]:
    """-log sigmoid(r(chosen) - r(rejected)) averaged, and its gradient in the weights."""
    margin = diff @ model.weights
    loss = float(np.mean(np.logaddexp(0.0, -margin)) + L2 * (model.weights**2).sum())
    grad = -(diff * (1.0 / (1.0 + np.exp(margin)))[:, None]).mean(axis=0) + 2 * L2 * model.weights
    return loss, grad


def train(prefs: Path, base: Path, out: Path, scale: str = "demo", seed: int = 0, lr: float = 0.01) -> dict:
    check_scale(scale)
    pairs = [json.loads(line) for line in find_file(prefs, "prefs.jsonl").read_text().splitlines() if line.strip()]
    vocab = json.loads((Path(base) / "vocab.json").read_text())  # the SFT policy's words
    order = np.random.default_rng(seed).permutation(len(pairs))
    split = int(len(pairs) * 0.8)
    train_pairs, held_pairs = [pairs[i] for i in order[:split]], [pairs[i] for i in order[split:]]
    model = RewardModel(vocab, np.zeros(len(vocab)))

    def words(rows: list[dict], key: str) -> list[list[str]]:
        return [r[key].split() for r in rows]

    diff = model.features(words(train_pairs, "chosen")) - model.features(words(train_pairs, "rejected"))
    optimizer = Adam(model.weights.shape, lr)
    history = []
    for step in range(STEPS[scale] + 1):
        loss, grad = bradley_terry_loss(model, diff)
        if step % LOG_EVERY[scale] == 0 or step == STEPS[scale]:
            point = {"step": step, "loss": loss,
                     "train_accuracy": pairwise_accuracy(model, words(train_pairs, "chosen"),
                                                         words(train_pairs, "rejected")),
                     "heldout_accuracy": pairwise_accuracy(model, words(held_pairs, "chosen"),
                                                           words(held_pairs, "rejected"))}
            history.append(point)
            log("reward", step, loss=loss, train_accuracy=point["train_accuracy"],
                heldout_accuracy=point["heldout_accuracy"])
        if step == STEPS[scale]:
            break
        optimizer.step(model.weights, grad)
    model.save(out)
    top = np.argsort(model.weights)
    metrics = {"stage": "reward", "scale": scale, "train_pairs": len(train_pairs), "heldout_pairs": len(held_pairs),
               "final_loss": history[-1]["loss"], "heldout_accuracy": history[-1]["heldout_accuracy"],
               "most_rewarded": [vocab[i] for i in top[::-1][:5]], "most_penalized": [vocab[i] for i in top[:5]],
               "history": history}
    write_metrics(out, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefs", default=os.environ.get("SKYFLOW_INPUT_PREFS"))
    parser.add_argument("--base", default=os.environ.get("SKYFLOW_INPUT_BASE"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_MODEL"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(Path(args.prefs), Path(args.base), Path(args.out), args.scale, args.seed)


if __name__ == "__main__":
    main()
