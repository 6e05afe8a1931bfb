"""Stage eval: sample from the SFT and PPO policies, score both, write report.json and plot.png."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from tinyrlhf.corpus import gold_score
from tinyrlhf.plot import plot_report
from tinyrlhf.policy import EOS, BigramPolicy, sequence_kl
from tinyrlhf.reward_model import RewardModel
from tinyrlhf.signals import check_scale, log, read_metrics

SAMPLES = {"demo": 500, "full": 5000}


def describe(policy: BigramPolicy, scorer: RewardModel, seqs: list[list[int]]) -> tuple[dict, np.ndarray]:
    words = [policy.words(s) for s in seqs]
    rewards = scorer.score(words)
    eos = policy.index[EOS]
    summary = {"mean_reward": float(rewards.mean()), "mean_gold": float(np.mean([gold_score(w) for w in words])),
               "mean_length": float(np.mean([len(w) for w in words])),
               "finished": float(np.mean([s[-1] == eos for s in seqs])),
               "examples": [" ".join(w) for w in words[:5]]}
    return summary, rewards


def evaluate(sft: Path, ppo: Path, reward: Path, out: Path, scale: str = "demo", seed: int = 0) -> dict:
    check_scale(scale)
    scorer = RewardModel.load(reward)
    policies = {"sft": BigramPolicy.load(sft), "ppo": BigramPolicy.load(ppo)}
    samples = {name: p.sample(np.random.default_rng(seed), SAMPLES[scale]) for name, p in policies.items()}
    summaries, rewards = {}, {}
    for name, policy in policies.items():
        summaries[name], rewards[name] = describe(policy, scorer, samples[name])
        log("eval", name, reward=summaries[name]["mean_reward"], gold=summaries[name]["mean_gold"],
            length=summaries[name]["mean_length"])
    kl = sequence_kl(policies["ppo"], policies["sft"], samples["ppo"])
    n = min(len(rewards["sft"]), len(rewards["ppo"]))
    report = {
        "scale": scale, "run_id": os.environ.get("SKYFLOW_RUN_ID"), "samples": SAMPLES[scale],
        "sft": summaries["sft"], "ppo": summaries["ppo"],
        "reward_gain": summaries["ppo"]["mean_reward"] - summaries["sft"]["mean_reward"],
        "gold_gain": summaries["ppo"]["mean_gold"] - summaries["sft"]["mean_gold"],
        "ppo_win_rate": float(np.mean(rewards["ppo"][:n] > rewards["sft"][:n])),
        "kl_ppo_to_sft": kl,
        "training": {"sft_final_loss": read_metrics(sft)["final_loss"],
                     "reward_heldout_accuracy": read_metrics(reward)["heldout_accuracy"],
                     "ppo_final_kl": read_metrics(ppo)["final_kl"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot_report(out / "plot.png", read_metrics(sft), read_metrics(reward), read_metrics(ppo),
                                 rewards)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log("eval", "compare", reward_gain=report["reward_gain"], gold_gain=report["gold_gain"],
        win_rate=report["ppo_win_rate"], kl=kl)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sft", default=os.environ.get("SKYFLOW_INPUT_SFT"))
    parser.add_argument("--ppo", default=os.environ.get("SKYFLOW_INPUT_PPO"))
    parser.add_argument("--reward", default=os.environ.get("SKYFLOW_INPUT_REWARD"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_REPORT"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    evaluate(Path(args.sft), Path(args.ppo), Path(args.reward), Path(args.out), args.scale, args.seed)


if __name__ == "__main__":
    main()
