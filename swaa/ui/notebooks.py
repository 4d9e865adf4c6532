"""`swaa reproduce` / `make figures`: execute every notebook in order through papermill, headless.

Executed notebooks go to ``out/notebooks/`` (git-ignored), figures to ``figures/``. Progress is shown per notebook
and per cell; a failure stops the run with the notebook and the cell named. Long computations inside the
notebooks write their rows to ``out/`` as they finish (:mod:`swaa.store.rows`), so a rerun resumes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["NOTEBOOKS", "run_notebooks", "find_notebooks", "NotebookFailed"]

# notebook -> the figures it must write (checked after each run)
NOTEBOOKS: dict[str, list[str]] = {
    "00_setup.ipynb": ["00_configs.png"],
    "01_attention_patterns.ipynb": ["01_masks.png", "01_attention_maps.png", "01_sink_mass.png",
                                    "01_loss_heatmap.png", "01_loss_vs_window.png", "01_recipes.png"],
    "02_eval.ipynb": ["02_eval_heatmap.png", "02_eval_intervals.png", "02_needle.png"],
    "03_sft.ipynb": ["03_sft_loss.png", "03_sft_before_after.png"],
    "04_speed.ipynb": ["04_speedup_vs_length.png", "04_cost_model.png", "04_tradeoff.png"],
    "05_lighttransfer.ipynb": ["05_lazy_ratios.png", "05_lighttransfer_vs_interleave.png"],
}


class NotebookFailed(RuntimeError):
    pass


def find_notebooks(folder: str | Path | None = None) -> Path:
    """The folder holding the project's notebooks: ``folder``, else ./notebooks (the project's root is the working
    directory, as ``make figures`` runs it). The notebooks are the project's, not the installed package's."""
    path = Path(folder) if folder is not None else Path.cwd() / "notebooks"
    have = [n for n in NOTEBOOKS if (path / n).is_file()]
    if not have:
        where = f"{path}" if folder is not None else f"{path} (the working directory's notebooks/)"
        raise ValueError(f"no swaa notebooks in {where}: run `swaa reproduce` from the root of the swaa project (a "
                         f"checkout of its repository), or give the folder with --notebooks DIR")
    return path


def run_notebooks(names=None, *, smoke: bool = False, out: str | Path = "out", figures: str | Path = "figures",
                  parameters: dict | None = None, notebook_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Execute notebooks in order; returns {notebook: seconds}. Raises NotebookFailed naming notebook and cell.
    ``notebook_dir``: where the notebooks are (:func:`find_notebooks`)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    names = list(names or NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; known: {list(NOTEBOOKS)}")
    notebook_dir = find_notebooks(notebook_dir).resolve()
    missing = [n for n in names if not (notebook_dir / n).is_file()]
    if missing:
        raise ValueError(f"{notebook_dir} lacks the notebooks {missing}")
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
