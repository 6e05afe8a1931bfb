"""Stage ppo: tune the SFT policy against the reward model with PPO and a KL penalty to SFT.

Per token the reward is ``-kl_coef * (log pi - log pi_sft)``, plus the reward model's score on
the last token; advantages are returns minus a per-state value baseline. The clipped surrogate's
gradient for a softmax row is ``ratio * A * (onehot(a) - pi(.|s))``, so no autodiff is needed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from tinyrlhf.corpus import gold_score
from tinyrlhf.policy import EOS, Adam, BigramPolicy, log_softmax, sequence_kl, softmax
from tinyrlhf.reward_model import RewardModel
from tinyrlhf.signals import check_scale, log, write_metrics

STEPS = {"demo": 80, "full": 2000}
BATCH = {"demo": 64, "full": 256}
LOG_EVERY = {"demo": 5, "full": 50}
EPOCHS, CLIP = 4, 0.2
MISSING_EOS_PENALTY = 4.0  # a reply cut off at MAX_TOKENS is not a reply (as TRL's missing_eos_penalty)


def rollout(policy: BigramPolicy, reference: BigramPolicy, scorer: RewardModel, seqs: list[list[int]],
            kl_coef: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flattened (states, actions, returns) of a batch, and each sequence's reward-model score."""
    logp, logq = log_softmax(policy.logits), log_softmax(reference.logits)
    scores = scorer.score([policy.words(s) for s in seqs])
    eos = policy.index[EOS]
    states, actions, returns = [], [], []
    for seq, score in zip(seqs, scores, strict=True):
        s, a = np.array(seq[:-1]), np.array(seq[1:])
        rewards = -kl_coef * (logp[s, a] - logq[s, a])
        rewards[-1] += score - (MISSING_EOS_PENALTY if a[-1] != eos else 0.0)
        states.append(s)
        actions.append(a)
        returns.append(np.cumsum(rewards[::-1])[::-1])
    return np.concatenate(states), np.concatenate(actions), np.concatenate(returns), scores


def surrogate_gradient(policy: BigramPolicy, states: np.ndarray, actions: np.ndarray, advantages: np.ndarray,
                       old_probs: np.ndarray) -> np.ndarray:
    """Gradient of the clipped PPO objective (to be ascended) in the logits."""
    probs = softmax(policy.logits)
    ratio = probs[states, actions] / old_probs
    clipped = ((advantages > 0) & (ratio > 1 + CLIP)) | ((advantages < 0) & (ratio < 1 - CLIP))
    coef = np.where(clipped, 0.0, ratio * advantages)
    grad = np.zeros_like(policy.logits)
    np.add.at(grad, (states, actions), coef)
    np.add.at(grad, states, -coef[:, None] * probs[states])
    return grad / len(states)


def train(policy_dir: Path, reward_dir: Path, out: Path, scale: str = "demo", seed: int = 0,
          kl_coef: float = 0.2, lr: float = 0.05) -> dict:
    check_scale(scale)
    reference = BigramPolicy.load(policy_dir)
    policy = BigramPolicy(reference.vocab, reference.logits.copy())
    scorer = RewardModel.load(reward_dir)
    rng = np.random.default_rng(seed)
    values = np.zeros(len(policy.vocab))
    optimizer = Adam(policy.logits.shape, lr)
    history = []
    for step in range(STEPS[scale] + 1):
        seqs = policy.sample(rng, BATCH[scale])
        states, actions, returns, scores = rollout(policy, reference, scorer, seqs, kl_coef)
        if step % LOG_EVERY[scale] == 0 or step == STEPS[scale]:
            point = {"step": step, "reward": float(scores.mean()), "kl": sequence_kl(policy, reference, seqs),
                     "gold": float(np.mean([gold_score(policy.words(s)) for s in seqs])),
                     "length": float(np.mean([len(s) - 2 for s in seqs]))}
            history.append(point)
            log("ppo", step, reward=point["reward"], kl=point["kl"], gold=point["gold"], length=point["length"])
        if step == STEPS[scale]:
            break
        advantages = returns - values[states]
        totals, counts = np.zeros_like(values), np.zeros_like(values)
        np.add.at(totals, states, returns)
        np.add.at(counts, states, 1.0)
        seen = counts > 0
        values[seen] += 0.2 * (totals[seen] / counts[seen] - values[seen])
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        old_probs = softmax(policy.logits)[states, actions]
        for _ in range(EPOCHS):
            optimizer.step(policy.logits, -surrogate_gradient(policy, states, actions, advantages, old_probs))
    policy.save(out)
    metrics = {"stage": "ppo", "scale": scale, "kl_coef": kl_coef, "batch": BATCH[scale],
               "initial_reward": history[0]["reward"], "final_reward": history[-1]["reward"],
               "final_kl": history[-1]["kl"], "max_kl": max(p["kl"] for p in history), "history": history}
    write_metrics(out, metrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", default=os.environ.get("SKYFLOW_INPUT_POLICY"))
    parser.add_argument("--reward", default=os.environ.get("SKYFLOW_INPUT_REWARD"))
    parser.add_argument("--out", default=os.environ.get("SKYFLOW_OUTPUT_POLICY"))
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kl-coef", type=float, default=0.2)
    args = parser.parse_args()
    train(Path(args.policy), Path(args.reward), Path(args.out), args.scale, args.seed, args.kl_coef)


if __name__ == "__main__":
    main()
