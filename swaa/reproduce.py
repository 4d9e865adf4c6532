"""`swaa reproduce` / `make figures`: the main job, run headless on the default model on CPU.

Now: the sink effect on real offline text: mean next-token loss of the default model under a grid of SWAA
configurations (windows x sinks, plus interleaved full-attention layers), written row by row to
``out/reproduce/loss_grid.jsonl`` (a rerun resumes and recomputes nothing), then ``figures/loss_vs_window.png``
and ``figures/loss_grid.csv``. The notebooks join this run as they are written (papermill).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from .config import SWAAConfig

__all__ = ["loss_grid_configs", "run_loss_grid", "reproduce"]


def loss_grid_configs(num_layers: int = 30) -> list[SWAAConfig]:
    cfgs = [SWAAConfig()]
    for w in (32, 64, 128, 256, 512):
        for s in (0, 4):
            cfgs.append(SWAAConfig(sliding_window_size=w, keep_first=s))
    cfgs.append(SWAAConfig(sliding_window_size=64, keep_first=4, non_sliding_layers=list(range(1, num_layers, 2))))
    cfgs.append(SWAAConfig(sliding_window_size=64, keep_first=4, non_sliding_layers=list(range(3, num_layers, 4))))
    return cfgs


def _row_key(model_name: str, n_tokens: int, source: str, cfg: SWAAConfig) -> str:
    return f"{model_name}|{n_tokens}|{source}|{cfg.to_json()}"


def load_rows(path: Path) -> dict[str, dict]:
    """Finished rows of a JSONL results file by key. A line cut short by a crash is dropped from the file (its
    config is computed again), so that the next append starts on a fresh line."""
    done, good, bad = {}, [], 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                done[row["key"]] = row
                good.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                bad += 1
        if bad or (good and not path.read_text().endswith("\n")):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text("".join(g + "\n" for g in good))
            tmp.replace(path)
    return done


def run_loss_grid(model, tok, configs, *, n_tokens: int = 1536, source: str = "gpl3", model_name: str = "default",
                  results: Path, progress: bool = True) -> list[dict]:
    """Loss for each config, appended to ``results`` (JSONL) as it is computed; rows already there are reused."""
    from tqdm.auto import tqdm

    from .data import offline_token_ids
    from .perplexity import mean_loss

    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = load_rows(results)
    ids = offline_token_ids(tok, n_tokens, source)
    rows = []
    bar = tqdm(configs, desc="loss grid", disable=not progress)
    for cfg in bar:
        key = _row_key(model_name, n_tokens, source, cfg)
        bar.set_postfix_str(cfg.mark)
        if key not in done:
            t0 = time.perf_counter()
            loss = mean_loss(model, ids, cfg)
            row = dict(key=key, model=model_name, mark=cfg.mark, window=cfg.sliding_window_size,
                       keep_first=cfg.keep_first, non_sliding=len(cfg.non_sliding_layers),
                       swaa_config=cfg.to_dict(), n_tokens=n_tokens, source=source, loss=loss,
                       seconds=round(time.perf_counter() - t0, 2))
            with results.open("a") as f:               # one line per finished config: nothing is lost on Ctrl-C
                f.write(json.dumps(row) + "\n")
            done[key] = row
        rows.append(done[key])
    return rows


def reproduce(out_dir: str | Path = "out", figures_dir: str | Path = "figures", *, n_tokens: int = 1536,
              model: str | None = None) -> dict:
    """Run the main job; returns a summary dict (also written to ``figures/loss_grid.json``)."""
    import pandas as pd
    import torch
    import transformers

    from .models import load_model
    from .viz import plot_loss_vs_window

    t0 = time.time()
    out_dir, figures_dir = Path(out_dir), Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    m, tok = load_model(model)
    name = model or "SmolLM2-135M-Instruct"
    rows = run_loss_grid(m, tok, loss_grid_configs(m.config.num_hidden_layers), n_tokens=n_tokens,
                         model_name=name, results=out_dir / "reproduce" / "loss_grid.jsonl")
    table = pd.DataFrame([{k: r[k] for k in ("mark", "window", "keep_first", "non_sliding", "loss")} for r in rows])
    table.to_csv(figures_dir / "loss_grid.csv", index=False)
    fig = plot_loss_vs_window(rows, title=f"{name}: loss on {n_tokens} tokens of GPL-3 text")
    fig.savefig(figures_dir / "loss_vs_window.png", dpi=130)
    summary = dict(model=name, n_tokens=n_tokens, rows=table.to_dict("records"), seconds=round(time.time() - t0, 1),
                   torch=torch.__version__, transformers=transformers.__version__, machine=platform.machine(),
                   threads=torch.get_num_threads())
    (figures_dir / "loss_grid.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table.to_string(index=False))
    print(f"wrote {figures_dir}/loss_vs_window.png, loss_grid.csv, loss_grid.json in {summary['seconds']} s")
    return summary
