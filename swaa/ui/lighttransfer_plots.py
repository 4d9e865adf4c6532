"""Plots of the LightTransfer baseline: lazy ratios per layer and head, layer frequencies, and the comparison of
the lazy-layer config with interleaving. Every helper returns the figure; the caller decides where to save it."""
from __future__ import annotations

__all__ = ["plot_lazy_ratios", "plot_lazy_comparison"]


def plot_lazy_ratios(res: dict, lazy_full_layers=(), interleaved_full_layers=()):
    """Top: mean lazy ratio per head (rows) and layer (columns). Bottom: per layer, how often it was among the
    laziest ``top_p`` of a sample; full-attention layers of the lazy config in dark, interleaved ones marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    heads = np.array(res["head_lazy_ratio"]).T                              # (Hq, layers)
    n = res["num_layers"]
    p = res["params"]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(max(7.0, 0.3 * n + 2.5), 5.6), sharex=True,
                                 gridspec_kw=dict(height_ratios=[heads.shape[0] + 1, 5]), layout="constrained")
    im = ax.imshow(heads, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                   extent=(-0.5, n - 0.5, heads.shape[0] - 0.5, -0.5))
    fig.colorbar(im, ax=ax, label="lazy ratio", pad=0.01)
    ax.set(ylabel="query head", title=f"lazy ratio: attention mass on the first {p['w_sink']} + last {p['w_recent']} "
           f"keys, last {p['w_last']} queries, mean of {res['n_used']} samples")
    ax.title.set_fontsize(9)
    freq = [res["freq"][str(layer)] for layer in range(n)]
    full = set(lazy_full_layers)
    colors = ["tab:gray" if layer in full else "tab:orange" for layer in range(n)]
    bx.bar(range(n), freq, color=colors)
    for layer in interleaved_full_layers:
        bx.plot(layer, -0.06, marker="^", color="tab:blue", ms=5, clip_on=False)
    bx.plot([], [], "s", color="tab:orange", label="sliding (lazy) in the LightTransfer config")
    bx.plot([], [], "s", color="tab:gray", label="full attention in the LightTransfer config")
    bx.plot([], [], "^", color="tab:blue", label="full attention when interleaved")
    bx.set(xlabel="layer", ylabel=f"freq. in laziest {p['top_p']:.0%}", ylim=(-0.1, 1.35))
    bx.set_xticks(range(n), [str(i) if i % 2 == 0 or n <= 16 else "" for i in range(n)])
    bx.legend(fontsize=7, ncol=3, loc="upper left", frameon=False)
    return fig


def plot_lazy_comparison(per_row, order, labels: dict | None = None):
    """``per_row``: DataFrame with ``mark``, ``task``, ``answer_nll_mean``, ``contains`` (one row per sample and
    setting); ``order``: marks in display order. Left: answer NLL by task and overall; right: contains overall."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = labels or {}
    tasks = sorted(per_row["task"].dropna().unique()) + ["mean"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw=dict(width_ratios=[3, 1]), layout="constrained")
    width = 0.8 / len(order)
    for m, mark in enumerate(order):
        rows = per_row[per_row["mark"] == mark]
        nll = [rows[rows["task"] == t]["answer_nll_mean"].mean() for t in tasks[:-1]] + [rows["answer_nll_mean"].mean()]
        x = np.arange(len(tasks)) + (m - (len(order) - 1) / 2) * width
        ax.bar(x, nll, width, label=labels.get(mark, mark))
        bx.bar(m, rows["contains"].mean(), 0.7)
        bx.text(m, rows["contains"].mean() + 0.01, f"{rows['contains'].mean():.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set(ylabel="answer NLL (nats/token, lower is better)", title="answer NLL by task")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    bx.set_xticks(range(len(order)), [labels.get(m, m).split(":")[0] for m in order], rotation=30, ha="right",
                  fontsize=8)
    bx.set(ylabel="contains (answer in the response)", title=f"accuracy ({len(per_row) // len(order)} rows each)",
           ylim=(0, 1))
    return fig
