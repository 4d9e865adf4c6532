"""Plots (matplotlib/seaborn). Every helper returns the figure; the caller decides where to save it."""
from __future__ import annotations

__all__ = ["plot_loss_vs_window", "plot_mask", "plot_masks", "plot_attention_maps", "plot_sink_mass",
           "plot_loss_heatmap", "plot_recipes", "plot_intervals", "heatmap_with_intervals", "plot_needle"]


def _plt():
    import matplotlib.pyplot as plt   # headless machines get Agg automatically; Jupyter keeps its inline backend
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


def plot_masks(configs, length: int = 24, layer: int = 0, prompt_fraction: float | None = None, cols: int = 4):
    """The rule drawn for several configs (layer ``layer``'s plan). With ``prompt_fraction``, rows after the prompt
    are decode tokens (full attention where the config's FA decode applies)."""
    from ..attention.masks import dense_mask
    plt = _plt()
    n = len(configs)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False, layout="constrained")
    for ax, cfg in zip(axes.flat, configs):
        plan = cfg.layer(layer)
        fa_from = int(length * prompt_fraction) if (prompt_fraction and plan.fa_decode) else None
        m = dense_mask(length, length, plan.window, plan.keep_first, fa_from=fa_from)[0, 0]
        ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set_title(cfg.mark, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("key position", fontsize=9)
    fig.supylabel("query position", fontsize=9)
    return fig


def plot_attention_maps(maps: dict, n_tokens: int = 96, title: str | None = None):
    """``{layer: (H, L, L)}`` probabilities -> one head-averaged log-scale panel per layer; bright first
    columns are the attention sinks."""
    import numpy as np
    plt = _plt()
    layers = sorted(maps)
    fig, axes = plt.subplots(1, len(layers), figsize=(2.9 * len(layers), 3.1), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        p = maps[layer].mean(0)[:n_tokens, :n_tokens].numpy()
        ax.imshow(np.log10(p + 1e-4), cmap="magma", vmin=-4, vmax=0, interpolation="nearest")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_ylabel("query")
    fig.suptitle(title or "attention probability (log10, mean over heads)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sink_mass(series: dict, n_first: int = 1, non_sliding=(), ax=None):
    """``{label: (num_layers,) tensor}`` -> grouped bars of the attention mass on the first tokens per layer."""
    import numpy as np
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = list(series)
    width = 0.8 / max(1, len(labels))
    for n, label in enumerate(labels):
        v = np.asarray(series[label], dtype=float)
        ax.bar(np.arange(len(v)) + (n - (len(labels) - 1) / 2) * width, v, width, label=label)
    for layer in non_sliding:
        ax.axvspan(layer - 0.45, layer + 0.45, color="0.85", zorder=0)
    ax.set(xlabel="layer", ylabel=f"attention on first {n_first} token(s)", ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def plot_loss_heatmap(rows: list[dict], full_loss: float | None = None, title: str | None = None):
    """rows with ``window``, ``keep_first``, ``loss`` -> heatmap of loss over (keep_first, window)."""
    import pandas as pd
    import seaborn as sns
    plt = _plt()
    df = pd.DataFrame([r for r in rows if r["window"] is not None and not r.get("non_sliding")])
    table = df.pivot_table(index="keep_first", columns="window", values="loss")
    fig, ax = plt.subplots(figsize=(1.1 * len(table.columns) + 2, 0.6 * len(table.index) + 1.8))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="rocket_r", ax=ax, cbar_kws={"label": "mean next-token loss"})
    ax.set(xlabel="sliding window W", ylabel="keep_first (sinks)")
    t = title or "loss on real offline text"
    if full_loss is not None:
        t += f" (full attention: {full_loss:.2f})"
    ax.set_title(t, fontsize=10)
    fig.tight_layout()
    return fig


def plot_recipes(rows: list[dict], title: str | None = None):
    """rows with ``mark``, ``loss`` and ``continuation_loss`` -> horizontal bars comparing SWAA recipes."""
    import numpy as np
    plt = _plt()
    marks = [r["mark"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.3))
    ax.barh(y + 0.2, [r["loss"] for r in rows], 0.4, label="whole text (prompt under SWA)")
    ax.barh(y - 0.2, [r["continuation_loss"] for r in rows], 0.4, label="continuation (decode tokens)")
    ax.set_yticks(y, marks, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean next-token loss")
    ax.set_title(title or "SWAA recipes", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / len(rows)), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_speedup_vs_length(rows: list[dict], title: str | None = None):
    """Speed rows (``model``, ``n``, ``mark``, ``prefill_s``, ``decode_step_ms``) -> speed-up over full attention
    against context length, prefill (left) and decode (right), one line per (model, setting)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    full = {(r.get("model"), r["n"]): r for r in rows if r["mark"] == "full"}
    series: dict = {}
    for r in rows:
        f = full.get((r.get("model"), r["n"]))
        if f is None or r["mark"] == "full":
            continue
        series.setdefault((r.get("model"), r["mark"]), []).append(
            (r["n"], f["prefill_s"] / r["prefill_s"], f["decode_step_ms"] / r["decode_step_ms"]))
    models = sorted({m for m, _ in series}, key=str)
    styles = dict(zip(models, ("-", "--", ":", "-.")))
    for (model, mark), pts in sorted(series.items(), key=str):
        pts.sort()
        label = f"{model}: {mark}" if len(models) > 1 else mark
        for ax, i in zip(axes, (1, 2)):
            ax.plot([p[0] for p in pts], [p[i] for p in pts], marker="o", ls=styles[model], label=label)
    for ax, what in zip(axes, ("prefill (time to first token)", "decode (per token)")):
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="context length (tokens)", ylabel="speed-up over full attention", title=what)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title or "end-to-end speed-up", fontsize=10)
    fig.tight_layout()
    return fig


def plot_cost_model(rows: list[dict], target: float = 0.15, title: str | None = None):
    """Predicted against measured time (rows with ``pred_prefill_s``/``prefill_s`` and ``pred_decode_step_ms``/
    ``decode_step_ms``), the diagonal and the +-``target`` band."""
    import numpy as np
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    rows = [r for r in rows if r.get("pred_prefill_s") is not None]
    for ax, (meas, pred, unit) in zip(axes, (("prefill_s", "pred_prefill_s", "s"),
                                             ("decode_step_ms", "pred_decode_step_ms", "ms"))):
        for model in sorted({r.get("model") for r in rows}, key=str):
            sel = [r for r in rows if r.get("model") == model]
            ax.scatter([r[meas] for r in sel], [r[pred] for r in sel], s=22, label=str(model))
        vals = [r[k] for r in rows for k in (meas, pred) if r[k] and r[k] > 0]
        if vals:
            lo, hi = min(vals) / 1.5, max(vals) * 1.5
            x = np.geomspace(lo, hi, 50)
            ax.plot(x, x, "k-", lw=1)
            ax.fill_between(x, x * (1 - target), x * (1 + target), color="0.85", zorder=0,
                            label=f"within {target:.0%}")
            ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
        errs = [abs(r[pred] / r[meas] - 1) for r in rows if r[meas]]
        inside = sum(e <= target for e in errs)
        ax.set(xlabel=f"measured ({unit})", ylabel=f"predicted ({unit})",
               title=f"{meas.split('_')[0]}: {inside}/{len(errs)} rows within {target:.0%}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "cost model: predicted vs measured", fontsize=10)
    fig.tight_layout()
    return fig


def plot_tradeoff(points: list[dict], metric: str = "answer_nll_mean", xlabel: str = "time (s)", ax=None,
                  title: str | None = None):
    """Points from :func:`swaa.speed.tradeoff.tradeoff_table` -> accuracy against time with the Pareto front."""
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.6))
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["seconds"])
    ax.scatter([p["seconds"] for p in points], [p[metric] for p in points], c=["tab:red" if p["pareto"] else "0.6"
               for p in points], s=30, zorder=3)
    ax.step([p["seconds"] for p in front], [p[metric] for p in front], where="post", color="tab:red", lw=1.2,
            label="Pareto front")
    for p in points:
        ax.annotate(f"{p['mark']} ({p['speedup']:.2f}x)", (p["seconds"], p[metric]), fontsize=6.5,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=xlabel, ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def plot_intervals(table, metrics=("answer_nll_mean", "contains"), labels: dict | None = None,
                   title: str | None = None):
    """A summary table (one row per setting: ``mark``, ``n``, each metric with ``_lo`` and ``_hi``, as
    :func:`swaa.evaluation.stats.summary_table` gives) -> one panel per metric: the mean and its 95% interval as an
    error bar, the settings top to bottom with their ``n``."""
    import numpy as np

    from ..evaluation.stats import PROPORTIONS
    plt = _plt()
    labels = labels or {}
    y = np.arange(len(table))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics) + 2.5, 0.4 * len(table) + 1.5),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        mean, lo, hi = (table[c].to_numpy(float) for c in (m, f"{m}_lo", f"{m}_hi"))
        ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", ms=5, capsize=3, color="tab:blue")
        if m in PROPORTIONS:
            ax.set_xlim(-0.03, 1.03)
        ax.set_xlabel(labels.get(m, m) + " (95% interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [f"{mk}  (n={n})" for mk, n in zip(table["mark"], table["n"])], fontsize=8)
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def heatmap_with_intervals(table, index: str, columns: str, metric: str, ax, fmt: str = "{:.2f}", **kwargs):
    """Cells of ``table`` (one row per (index, columns) value, with ``metric``, ``_lo`` and ``_hi``) as a heatmap
    coloured by the mean and labelled with it and its 95% interval; rows and columns in order of appearance."""
    import seaborn as sns
    grids = [table.pivot_table(index=index, columns=columns, values=c, aggfunc="first")
             .reindex(index=list(dict.fromkeys(table[index])), columns=list(dict.fromkeys(table[columns])))
             for c in (metric, f"{metric}_lo", f"{metric}_hi")]
    text = [[f"{fmt.format(m)}\n[{fmt.format(lo)}, {fmt.format(hi)}]" for m, lo, hi in zip(*r)]
            for r in zip(*(g.to_numpy(float) for g in grids))]
    sns.heatmap(grids[0], annot=text, fmt="", ax=ax, annot_kws={"fontsize": 7}, **kwargs)
    return ax


def plot_needle(table, marks, metric: str = "answer_nll_mean", label: str = "answer NLL (nats/token)",
                title: str | None = None):
    """Needle in a haystack: one heatmap per setting in ``marks`` (side by side, one colour scale), needle depth
    down and context length across, each cell the mean and 95% interval of ``metric`` over its rows
    (:func:`swaa.evaluation.needle.needle_table`)."""
    plt = _plt()
    sel = table[table["mark"].isin(marks)]
    vmin, vmax = float(sel[metric].min()), float(sel[metric].max())
    fig, axes = plt.subplots(1, len(marks), figsize=(1.25 * sel["context_length"].nunique() * len(marks) + 2.5,
                                                     0.62 * sel["depth"].nunique() + 1.9), squeeze=False)
    for k, (ax, mark) in enumerate(zip(axes[0], marks)):
        part = sel[sel["mark"] == mark].sort_values(["depth", "context_length"])
        part = part.assign(depth=[f"{d:.0%}" for d in part["depth"]])
        heatmap_with_intervals(part, "depth", "context_length", metric, ax, cmap="rocket_r", vmin=vmin, vmax=vmax,
                               cbar=k == len(marks) - 1, cbar_kws={"label": label})
        ax.set(title=mark, xlabel="context length (tokens)", ylabel="needle depth" if k == 0 else "")
        ax.title.set_fontsize(9)
    n = sorted(set(sel["n"]))
    fig.suptitle((title or "needle in a haystack") + f" (n = {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} per cell)",
                 fontsize=10)
    fig.tight_layout()
    return fig
