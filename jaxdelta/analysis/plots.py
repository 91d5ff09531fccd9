"""PNG figures (matplotlib, Agg backend) comparing several models' LogitLens on the same prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from jaxdelta.errors import JaxDeltaError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _printable(s: str) -> str:
    """Control characters (e.g. byte tokens) shown as their escape, so every glyph exists in the font."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def _check(curves: Mapping[str, np.ndarray], ndim: int, what: str) -> None:
    if not curves:
        raise JaxDeltaError(f"nothing to plot: give at least one model's {what}")
    for name, a in curves.items():
        if np.ndim(a) != ndim:
            raise JaxDeltaError(f"{what} of {name!r} must be a {ndim}-d array, got shape {np.shape(a)}")


def plot_opening_mass_curves(refusal: Mapping[str, np.ndarray], affirmative: Mapping[str, np.ndarray],
                             path: str | Path, *, title: str = "LogitLens: opening-token probability by layer") -> Path:
    """One line per model and token set: mean probability (over prompts) on refusal openings (solid) and
    affirmative openings (dashed) at each layer (0 = embeddings). Arrays are ``(num_layers + 1,)``."""
    _check(refusal, 1, "refusal curve")
    _check(affirmative, 1, "affirmative curve")
    if set(refusal) != set(affirmative):
        raise JaxDeltaError("refusal and affirmative curves must name the same models")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, name in enumerate(refusal):
        color = f"C{k}"
        x = np.arange(len(refusal[name]))
        ax.plot(x, refusal[name], "-o", color=color, ms=3, label=f"{name}: refusal")
        ax.plot(x, affirmative[name], "--s", color=color, ms=3, label=f"{name}: affirmative")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("probability mass")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_lens_heatmaps(grids: Mapping[str, np.ndarray], path: str | Path, *, labels: Mapping[str, list] | None = None,
                       xlabel: str = "prompt", title: str = "refusal minus affirmative probability",
                       vmin: float = -1.0, vmax: float = 1.0) -> Path:
    """One heatmap per model, side by side: ``grid[layer, column]`` (e.g. refusal - affirmative mass per
    prompt). ``labels[name][layer][column]`` (e.g. the top-1 token) is written in the cells when given."""
    _check(grids, 2, "heatmap grid")
    plt = _pyplot()
    n = len(grids)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1, 4), squeeze=False)
    im = None
    for ax, (name, g) in zip(axes[0], grids.items()):
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="coolwarm", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("layer")
        if labels and name in labels and g.size <= 400:
            for l in range(g.shape[0]):
                for c in range(g.shape[1]):
                    ax.text(c, l, _printable(str(labels[name][l][c]))[:6], ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
