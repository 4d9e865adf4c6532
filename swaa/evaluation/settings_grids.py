"""The default model's settings grid in the original settings-list JSON format: the recipes of the paper's lists
scaled to SmolLM2-135M (30 layers, short contexts). ``python -m swaa.evaluation.settings_grids`` rewrites it in data/settings/.

The paper's own lists are shipped as data beside it, every entry as in the paper's repository
(github.com/yuyijiong/sliding-window-attention-adaptation, ``Eval/settings_list/``): ``non_sft_settings_4b.json``
is ``paper_qwen3_4b.json``, ``non_sft_settings_30b.json`` ``paper_qwen3_30b_a3b.json``,
``non_sft_settings_llama3_8b.json`` ``paper_llama3_1_8b.json`` and ``sft_models_settings.json``
``paper_qwen3_sft.json``; model paths there are written as hub ids, fine-tuned checkpoints by their training
folder names. Their layer lists run past the models' depth, as the paper's do (see ``SWAAConfig.validate_layers``)."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import SWAAConfig, load_settings

__all__ = ["default_model_grid", "write_settings", "GRID_FILES"]


def _interleave(num_layers: int):
    return {"odd": list(range(1, num_layers, 2)), "even": list(range(0, num_layers, 2)),
            "every4": list(range(3, num_layers, 4))}


def default_model_grid(num_layers: int = 30, windows=(64, 128, 256), sinks=(1, 4, 16)) -> list[SWAAConfig]:
    """full; SWA at each window; + keep_first; + FA decode; + interleaved odd/even/every-4th layers; combinations
    (the paper's windows 2k/4k/8k and sinks 10/100/1000 scaled to ~1-2k-token prompts)."""
    w0 = windows[0]
    inter = _interleave(num_layers)
    grid = [SWAAConfig()]
    grid += [SWAAConfig(sliding_window_size=w) for w in windows]
    grid += [SWAAConfig(sliding_window_size=w0, keep_first=s) for s in sinks]
    grid += [SWAAConfig(sliding_window_size=w, force_fa_decode=True) for w in windows]
    grid += [SWAAConfig(sliding_window_size=w0, non_sliding_layers=v) for v in inter.values()]
    grid += [SWAAConfig(sliding_window_size=w0, keep_first=s, force_fa_decode=True) for s in sinks]
    grid += [SWAAConfig(sliding_window_size=w0, force_fa_decode=True, non_sliding_layers=v) for v in inter.values()]
    grid += [SWAAConfig(sliding_window_size=w0, keep_first=sinks[0], force_fa_decode=True, non_sliding_layers=v)
             for v in inter.values()]
    grid += [SWAAConfig(sliding_window_size=w, keep_first=sinks[1], force_fa_decode=True,
                        non_sliding_layers=inter["odd"]) for w in windows]
    return grid


def write_settings(path: str | Path, grid: list[SWAAConfig], models: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"swaa_config": c.to_dict(), "model_list": models} for c in grid], indent=1) + "\n")
    load_settings(path)                                  # what we write must read back
    return path


GRID_FILES = {"smollm2_135m.json": (30, ["default"], default_model_grid)}


def main() -> None:
    root = Path(__file__).resolve().parent.parent / "data" / "settings"
    for name, (layers, models, fn) in GRID_FILES.items():
        print(write_settings(root / name, fn(layers), models))


if __name__ == "__main__":
    main()
