"""Stage train: fit the MLP language model to the training tokens with minibatch Adam."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tinylm.model import Adam, MlpLM
from tinylm.signals import check_scale, log, write_metrics

STEPS = {"demo": 600, "full": 20000}
BATCH = {"demo": 128, "full": 512}
LOG_EVERY = {"demo": 50, "full": 500}


def train(tokens: Path, out: Path, scale: str = "demo", seed: int = 0, lr: float = 0.01) -> dict:
    check_scale(scale)
    vocab = json.loads((tokens / "vocab.json").read_text())
    with np.load(tokens / "tokens.npz") as data:
        train_ids, valid_ids = data["train"], data["valid"]
    model = MlpLM.init(vocab, seed=seed)
    ctx, targets = model.windows(train_ids)
    rng = np.random.default_rng(seed)
    optimizer = Adam(model.params, lr)
    history = []
    for step in range(STEPS[scale] + 1):
        batch = rng.integers(0, len(targets), BATCH[scale])
        loss, grads = model.loss_and_grads(ctx[batch], targets[batch])
        if step % LOG_EVERY[scale] == 0 or step == STEPS[scale]:
            point = {"step": step, "loss": loss, "valid_loss": model.nll(valid_ids)}
            history.append(point)
            log("train", step, loss=loss, valid_loss=point["valid_loss"])
        if step < STEPS[scale]:
            optimizer.step(model.params, grads)
    model.save(out)
    metrics = {"stage": "train", "scale": scale, "steps": STEPS[scale], "initial_loss": history[0]["loss"],
               "final_valid_loss": history[-1]["valid_loss"], "history": history}
    write_metrics(out, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", default=os.environ.get("SKYFLOW_INPUT_TOKENS"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_MODEL"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(Path(args.tokens), Path(args.out), args.scale, args.seed)


if __name__ == "__main__":
    main()
