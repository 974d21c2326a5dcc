"""The study's figures: Pass@k curves with bands, training curves, ResRL's weight statistics over training."""

from __future__ import annotations

import os


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    return plt


def plot_pass_curves(curves: dict[str, tuple[list[int], list[float], list[float], list[float]]], title: str,
                     path: str) -> str:
    """One line per method: mean Pass@k over seeds with its 95% band; the warm start dashed (label 'warmstart')."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, (ks, mean, low, high) in curves.items():
        style = {"linestyle": "--", "color": "black"} if label == "warmstart" else {}
        ax.plot(ks, [100 * v for v in mean], marker="o", markersize=3, label=label, **style)
        if label != "warmstart":
            ax.fill_between(ks, [100 * v for v in low], [100 * v for v in high], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Pass@k (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_training(curves: dict[str, dict[str, tuple[list[int], list[float], list[float]]]], path: str) -> str:
    """Two panels: training reward and validation accuracy against step, mean over seeds with a +-sd band."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in zip(axes, ("reward", "val_acc"), ("training reward (mean)", "validation accuracy")):
        for method, by_key in curves.items():
            steps, mean, sd = by_key.get(key, ([], [], []))
            if steps:
                ax.plot(steps, mean, marker="o" if key == "val_acc" else None, markersize=3, label=method)
                ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], alpha=0.15)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_weights(curves: dict[str, dict[str, tuple[list[int], list[float], list[float]]]], path: str) -> str | None:
    """ResRL's logged weight statistics (resrl/weight*) against step, one panel per ResRL method; None if absent."""
    methods = {m: c for m, c in curves.items() if any(k.startswith("resrl/weight") and c[k][0] for k in c)}
    if not methods:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.8), squeeze=False)
    for ax, (method, by_key) in zip(axes[0], methods.items()):
        for key in sorted(k for k in by_key if k.startswith("resrl/weight")):
            steps, mean, _ = by_key[key]
            ax.plot(steps, mean, label=key.removeprefix("resrl/"))
        ax.set_title(f"{method}: negative-token weights")
        ax.set_xlabel("step")
        ax.set_ylabel("weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
