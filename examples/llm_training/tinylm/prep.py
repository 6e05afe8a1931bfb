"""Stage prep: tokenize the corpus into word ids, split train/validation, write the vocabulary."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tinylm.signals import check_scale, find_file, log, write_metrics

EOS = "</s>"
UNK = "<unk>"
LINES = {"demo": 3000, "full": None}


def prepare(corpus: Path, out: Path, scale: str = "demo", seed: int = 0) -> dict:
    check_scale(scale)
    lines = [line.split() for line in find_file(corpus, "corpus.txt").read_text().splitlines() if line.strip()]
    lines = lines[: LINES[scale]]
    order = np.random.default_rng(seed).permutation(len(lines))
    cut = len(lines) // 10
    valid, train = [lines[i] for i in order[:cut]], [lines[i] for i in order[cut:]]
    vocab = [EOS, UNK, *sorted({w for line in train for w in line})]
    index = {w: i for i, w in enumerate(vocab)}

    def ids(rows: list[list[str]]) -> np.ndarray:
        return np.array([index.get(w, 1) for row in rows for w in [*row, EOS]], dtype=np.int32)

    out.mkdir(parents=True, exist_ok=True)
    train_ids, valid_ids = ids(train), ids(valid)
    np.savez(out / "tokens.npz", train=train_ids, valid=valid_ids)
    (out / "vocab.json").write_text(json.dumps(vocab))
    metrics = {"stage": "prep", "scale": scale, "vocab_size": len(vocab), "train_tokens": len(train_ids),
               "valid_tokens": len(valid_ids), "sentences": len(lines)}
    log("prep", "done", vocab_size=len(vocab), train_tokens=len(train_ids), valid_tokens=len(valid_ids))
    write_metrics(out, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", default=os.environ.get("SKYFLOW_INPUT_CORPUS"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_TOKENS"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prepare(Path(args.corpus), Path(args.out), args.scale, args.seed)


if __name__ == "__main__":
    main()
