"""Stage eval: validation perplexity of the model against a unigram baseline and a uniform guess."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tinylm.model import MlpLM
from tinylm.signals import log, write_metrics


def evaluate(model_dir: Path, tokens: Path, out: Path) -> dict:
    model = MlpLM.load(model_dir)
    with np.load(tokens / "tokens.npz") as data:
        train_ids, valid_ids = data["train"], data["valid"]
    counts = np.bincount(train_ids, minlength=len(model.vocab)) + 1.0
    unigram_nll = float(-np.log(counts / counts.sum())[valid_ids].mean())
    nll = model.nll(valid_ids)
    report = {"stage": "eval", "valid_tokens": len(valid_ids), "perplexity": float(np.exp(nll)),
              "unigram_perplexity": float(np.exp(unigram_nll)), "uniform_perplexity": float(len(model.vocab))}
    log("eval", "valid", perplexity=report["perplexity"], unigram_perplexity=report["unigram_perplexity"],
        uniform_perplexity=report["uniform_perplexity"])
    write_metrics(out, report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=os.environ.get("SKYFLOW_INPUT_MODEL"))
    parser.add_argument("--tokens", default=os.environ.get("SKYFLOW_INPUT_TOKENS"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_REPORT"))
    args = parser.parse_args()
    evaluate(Path(args.model), Path(args.tokens), Path(args.out))


if __name__ == "__main__":
    main()
