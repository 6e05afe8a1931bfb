"""The RLHF pipeline of pipeline.yaml written with skyflow's decorators: same stages, same DAG.

    skyflow validate examples/rlhf/pipeline.py:rlhf
    skyflow run examples/rlhf/pipeline.py:rlhf

Each stage function calls the same training code (the tinyrlhf package beside this file) that the
YAML's `python -m tinyrlhf.*` commands run.
"""

from __future__ import annotations

from pathlib import Path

from skyflow import Input, Pipeline, Resources, stage

SETUP = 'python -c "import numpy" 2>/dev/null || pip install -q numpy'
RECOVERY = {"max_restarts_on_errors": 2}
LOCAL = {"infra": "local", "cpus": "1+"}


def eight_gpus() -> Resources:
    return Resources(any_of=[{"accelerators": "A100:8", "use_spot": True, "job_recovery": RECOVERY},
                             {"accelerators": "H100:8", "use_spot": True, "job_recovery": RECOVERY}, LOCAL])


@stage(resources=eight_gpus(), setup=SETUP, outputs={"model": {"size_gb": 30}},
       estimate={"hours": {"A100": 10, "H100": 5, "local": 0.01}}, retries=2)
def sft(corpus: Path, outputs: dict, scale: str = "demo", seed: int = 0) -> None:
    from tinyrlhf import sft as job

    job.train(corpus, outputs["model"], scale, seed)


@stage(resources=Resources(any_of=[{"accelerators": "A100:8", "use_spot": True},
                                   {"accelerators": "H100:8", "use_spot": True}, LOCAL]),
       setup=SETUP, outputs={"model": {"size_gb": 30}}, estimate={"hours": {"A100": 4, "H100": 2, "local": 0.01}},
       retries=2)
def reward(base: Path, prefs: Path, outputs: dict, scale: str = "demo", seed: int = 0) -> None:
    from tinyrlhf import reward as job

    job.train(prefs, base, outputs["model"], scale, seed)


@stage(resources=eight_gpus(), setup=SETUP,
       outputs={"policy": {"size_gb": 30, "kind": "model", "register": "rlhf-policy"}},
       estimate={"hours": {"A100": 16, "H100": 8, "local": 0.01}}, retries=2)
def ppo(policy: Path, reward: Path, outputs: dict, scale: str = "demo", seed: int = 0, kl_coef: float = 0.2) -> None:
    from tinyrlhf import ppo as job

    job.train(policy, reward, outputs["policy"], scale, seed, kl_coef)


@stage(name="eval", resources=Resources(any_of=[{"accelerators": "L4:1"}, {"accelerators": "A10G:1"}, LOCAL]),
       setup='python -c "import numpy, matplotlib" 2>/dev/null || pip install -q numpy matplotlib',
       outputs={"report": {"size_gb": 0.01, "metrics": "report.json", "artifacts": ["plot.png"]}},
       estimate={"hours": {"L4": 1, "A10G": 1, "local": 0.01}})
def evaluate(sft: Path, ppo: Path, reward: Path, outputs: dict, scale: str = "demo", seed: int = 0) -> None:
    from tinyrlhf import evaluate as job

    job.evaluate(sft, ppo, reward, outputs["report"], scale, seed)


@Pipeline(name="rlhf", description="SFT -> reward model -> PPO -> eval, a real (tiny, numpy) RLHF loop",
          params={"scale": "demo", "seed": 0, "kl_coef": 0.2}, envs={"PYTHONUNBUFFERED": "1"},
          inputs={"corpus": Input(uri="./data/corpus.txt", infra="local", size_gb=50),
                  "prefs": Input(uri="./data/prefs.jsonl", infra="local", size_gb=5)})
def rlhf(corpus, prefs, params):
    policy = sft(corpus=corpus, scale=params.scale, seed=params.seed)
    scorer = reward(base=policy.model, prefs=prefs, scale=params.scale, seed=params.seed)
    tuned = ppo(policy=policy.model, reward=scorer.model, scale=params.scale, seed=params.seed,
                kl_coef=params.kl_coef)
    evaluate(sft=policy.model, ppo=tuned.policy, reward=scorer.model, scale=params.scale, seed=params.seed)
