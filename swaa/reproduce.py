"""`swaa reproduce` / `make figures`: execute every notebook in order through papermill, headless.

Executed notebooks go to ``out/notebooks/`` (git-ignored), figures to ``figures/``. Progress is shown per notebook
and per cell; a failure stops the run with the notebook and the cell named. Long computations inside the
notebooks write their rows to ``out/`` as they finish (:mod:`swaa.results`), so a rerun resumes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import SWAAConfig

__all__ = ["NOTEBOOKS", "run_notebooks", "loss_grid_configs", "run_loss_grid", "NotebookFailed"]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# notebook -> the figures it must write (checked after each run)
NOTEBOOKS: dict[str, list[str]] = {
    "00_setup.ipynb": ["00_configs.png"],
    "01_attention_patterns.ipynb": ["01_masks.png", "01_attention_maps.png", "01_sink_mass.png",
                                    "01_loss_heatmap.png", "01_loss_vs_window.png", "01_recipes.png"],
    "02_eval.ipynb": ["02_eval_heatmap.png"],
    "03_sft.ipynb": ["03_sft_loss.png", "03_sft_before_after.png"],
    "04_speed.ipynb": ["04_speedup_vs_length.png", "04_cost_model.png", "04_tradeoff.png"],
    "05_lighttransfer.ipynb": ["05_lazy_ratios.png", "05_lighttransfer_vs_interleave.png"],
}


class NotebookFailed(RuntimeError):
    pass


def loss_grid_configs(windows=(16, 32, 64, 128, 256, 512), sinks=(0, 1, 4, 16)) -> list[SWAAConfig]:
    return [SWAAConfig()] + [SWAAConfig(sliding_window_size=w, keep_first=s) for w in windows for s in sinks]


def run_loss_grid(model, tok, configs, *, n_tokens: int = 1536, source: str = "gpl3", model_name: str = "default",
                  results: Path, progress: bool = True) -> list[dict]:
    """Mean loss of an offline text under each config, resumable in ``results`` (JSONL)."""
    from .data import offline_token_ids
    from .fingerprint import model_fingerprint
    from .perplexity import mean_loss
    from .results import run_resumable

    ids = offline_token_ids(tok, n_tokens, source)

    def compute(cfg):
        t0 = time.perf_counter()
        loss = mean_loss(model, ids, cfg)
        return dict(model=model_name, mark=cfg.mark, window=cfg.sliding_window_size, keep_first=cfg.keep_first,
                    non_sliding=len(cfg.non_sliding_layers), swaa_config=cfg.to_dict(), n_tokens=n_tokens,
                    source=source, loss=loss, seconds=round(time.perf_counter() - t0, 2))

    fp = model_fingerprint(model)
    return run_resumable(results, configs, key=lambda c: f"{fp}|{n_tokens}|{source}|{c.to_json()}",
                         compute=compute, progress=progress, desc="loss grid")


def run_notebooks(names=None, *, smoke: bool = False, out: str | Path = "out", figures: str | Path = "figures",
                  parameters: dict | None = None, notebook_dir: Path = NOTEBOOK_DIR, progress: bool = True) -> dict:
    """Execute notebooks in order; returns {notebook: seconds}. Raises NotebookFailed naming notebook and cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    names = list(names or NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; known: {list(NOTEBOOKS)}")
    out, figures = Path(out).resolve(), Path(figures).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    params = dict(SMOKE=smoke, FIGURES=str(figures), OUT=str(out), **(parameters or {}))
    timings = {}
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} {'(SMOKE) ' if smoke else ''}...", flush=True)
        t0 = time.time()
        target = out / "notebooks" / name
        try:
            pm.execute_notebook(str(notebook_dir / name), str(target), parameters=params, kernel_name="python3",
                                cwd=str(notebook_dir), progress_bar=progress, log_output=False)
        except PapermillExecutionError as e:
            raise NotebookFailed(f"{name} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                                 f"{e.ename}: {e.evalue}. Executed copy: {target}") from None
        missing = [f for f in NOTEBOOKS[name] if not (figures / f).exists() or (figures / f).stat().st_size == 0]
        if missing:
            raise NotebookFailed(f"{name} ran but did not write {missing} into {figures}")
        timings[name] = round(time.time() - t0, 1)
        print(f"[{i}/{len(names)}] {name} done in {timings[name]} s", flush=True)
    (out / "notebooks" / "timings.json").write_text(json.dumps(dict(smoke=smoke, seconds=timings), indent=1) + "\n")
    return timings
