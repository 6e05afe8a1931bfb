"""The eval figure: training curves of every stage and SFT vs PPO rewards, as one PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def plot_report(path: Path, sft: dict, reward: dict, ppo: dict, rewards: dict[str, np.ndarray]) -> str:
    """Draw with matplotlib when it is installed, else a plain raster of the curves; return which."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        curves = [[p["loss"] for p in sft["history"]], [p["heldout_accuracy"] for p in reward["history"]],
                  [p["reward"] for p in ppo["history"]], [p["kl"] for p in ppo["history"]]]
        write_curves_png(path, curves)
        return "raster"
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    steps = [p["step"] for p in sft["history"]]
    axes[0].plot(steps, [p["loss"] for p in sft["history"]], label="train")
    axes[0].plot(steps, [p["heldout_loss"] for p in sft["history"]], "--", label="held-out")
    axes[0].set(title="SFT cross-entropy", xlabel="step", ylabel="nats/token")
    steps = [p["step"] for p in reward["history"]]
    axes[1].plot(steps, [p["train_accuracy"] for p in reward["history"]], label="train")
    axes[1].plot(steps, [p["heldout_accuracy"] for p in reward["history"]], "--", label="held-out")
    axes[1].axhline(0.5, color="grey", lw=0.8)
    axes[1].set(title="Reward model pairwise accuracy", xlabel="step", ylim=(0.4, 1.0))
    steps = [p["step"] for p in ppo["history"]]
    axes[2].plot(steps, [p["reward"] for p in ppo["history"]], label="reward model")
    axes[2].plot(steps, [p["gold"] for p in ppo["history"]], ":", label="gold (raters)")
    axes[2].plot(steps, [p["kl"] for p in ppo["history"]], "--", label="KL to SFT")
    axes[2].set(title="PPO", xlabel="step")
    for name, values in rewards.items():
        axes[3].hist(values, bins=30, alpha=0.6, label=name)
    axes[3].set(title="Reward of sampled replies", xlabel="reward model score")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return "matplotlib"


def write_curves_png(path: Path, curves: list[list[float]], width: int = 240, height: int = 120) -> None:
    """Each curve scaled into its own panel, side by side, black on white; no text."""
    image = np.full((height, width * len(curves)), 255, dtype=np.uint8)
    for panel, values in enumerate(curves):
        ys = np.asarray(values, dtype=float)
        span = (ys.max() - ys.min()) or 1.0
        xs = np.linspace(5, width - 5, 400)
        interp = np.interp(xs, np.linspace(5, width - 5, len(ys)), ys)
        rows = (height - 5 - (interp - ys.min()) / span * (height - 10)).astype(int)
        image[rows, (xs + panel * width).astype(int)] = 0
        image[:, panel * width] = 128
    raw = b"".join(b"\x00" + row.tobytes() for row in image)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
