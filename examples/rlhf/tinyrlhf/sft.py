"""Stage sft: fit the bigram policy to the corpus by gradient descent on cross-entropy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from tinyrlhf.corpus import find_file
from tinyrlhf.policy import BOS, EOS, Adam, BigramPolicy, log_softmax, softmax, transition_counts
from tinyrlhf.signals import check_scale, log, write_metrics

STEPS = {"demo": 150, "full": 3000}
LOG_EVERY = {"demo": 10, "full": 100}
L2 = 1e-4  # keeps transitions never seen in the corpus finite, so PPO's KL to SFT stays defined


def cross_entropy(logits: np.ndarray, counts: np.ndarray) -> float:
    return float(-(counts * log_softmax(logits)).sum() / counts.sum())


def train(corpus: Path, out: Path, scale: str = "demo", seed: int = 0, lr: float = 0.1) -> dict:
    check_scale(scale)
    lines = [line.strip() for line in find_file(corpus, "corpus.txt").read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lines))
    held = [lines[i] for i in order[: len(lines) // 10]]
    train_lines = [lines[i] for i in order[len(lines) // 10:]]
    vocab = [BOS, EOS, *sorted({w for line in lines for w in line.split()})]
    policy = BigramPolicy.empty(vocab)
    counts, held_counts = transition_counts(policy, train_lines), transition_counts(policy, held)
    optimizer = Adam(policy.logits.shape, lr)
    history = []
    for step in range(STEPS[scale] + 1):
        if step % LOG_EVERY[scale] == 0 or step == STEPS[scale]:
            point = {"step": step, "loss": cross_entropy(policy.logits, counts),
                     "heldout_loss": cross_entropy(policy.logits, held_counts)}
            history.append(point)
            log("sft", step, loss=point["loss"], heldout_loss=point["heldout_loss"])
        if step == STEPS[scale]:
            break
        grad = (counts.sum(axis=1, keepdims=True) * softmax(policy.logits) - counts) / counts.sum()
        optimizer.step(policy.logits, grad + L2 * policy.logits)
    policy.save(out)
    metrics = {"stage": "sft", "scale": scale, "vocab_size": len(vocab), "train_lines": len(train_lines),
               "initial_loss": history[0]["loss"], "final_loss": history[-1]["loss"],
               "final_heldout_loss": history[-1]["heldout_loss"], "history": history}
    write_metrics(out, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default=os.environ.get("SKYFLOW_INPUT_CORPUS"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_MODEL"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(Path(args.corpus), Path(args.out), args.scale, args.seed)


if __name__ == "__main__":
    main()
