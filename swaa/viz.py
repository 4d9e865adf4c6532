"""Plots (matplotlib/seaborn). Every helper returns the figure; the caller decides where to save it."""
from __future__ import annotations

__all__ = ["plot_loss_vs_window", "plot_mask"]


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import IPython  # noqa: F401  (inside Jupyter, keep its inline backend)
        except ImportError:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_loss_vs_window(rows: list[dict], title: str | None = None):
    """rows: dicts with ``mark``, ``window`` (None = full), ``keep_first``, ``non_sliding`` (int), ``loss``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    full = [r for r in rows if r["window"] is None]
    plain = [r for r in rows if r["window"] is not None and not r["non_sliding"]]
    for s in sorted({r["keep_first"] for r in plain}):
        pts = sorted((r["window"], r["loss"]) for r in plain if r["keep_first"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"SWA, keep_first={s}")
    mixed = [r for r in rows if r["window"] is not None and r["non_sliding"]]
    for r, color, marker in zip(mixed, ("tab:green", "tab:red", "tab:purple", "tab:brown"), "*PXD"):
        ax.scatter([r["window"]], [r["loss"]], marker=marker, s=110, zorder=3, color=color,
                   label=f"W={r['window']} S={r['keep_first']} + {r['non_sliding']} full-attention layers")
    if full:
        ax.axhline(full[0]["loss"], color="k", ls="--", lw=1, label="full attention")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["window"] for r in rows if r["window"] is not None})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="sliding window W (tokens)", ylabel="mean next-token loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_mask(mask, title: str | None = None):
    """A (Lq, Lk) boolean mask as a picture."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(mask.numpy() if hasattr(mask, "numpy") else mask, cmap="Blues", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set(xlabel="key position", ylabel="query position", title=title)
    fig.tight_layout()
    return fig
