"""Settings grids in the original settings-list JSON format: the paper's grids for a model's layer count, and one
scaled to the default model (30 layers, short contexts). ``python -m swaa.grids`` rewrites data/settings/."""
from __future__ import annotations

import json
from pathlib import Path

from .config import SWAAConfig, load_settings

__all__ = ["paper_grid", "default_model_grid", "write_settings", "GRID_FILES"]


def _interleave(num_layers: int):
    return {"odd": list(range(1, num_layers, 2)), "even": list(range(0, num_layers, 2)),
            "every4": list(range(3, num_layers, 4))}


def paper_grid(num_layers: int, windows=(2000, 4000, 8000), sinks=(10, 100, 1000)) -> list[SWAAConfig]:
    """full; SWA at each window; + keep_first; + FA decode; + interleaved odd/even/every-4th layers; combinations."""
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


def default_model_grid(num_layers: int = 30) -> list[SWAAConfig]:
    """The paper's grid scaled to SmolLM2-135M and ~1-2k-token prompts: windows 64/128/256, sinks 1/4/16."""
    return paper_grid(num_layers, windows=(64, 128, 256), sinks=(1, 4, 16))


def write_settings(path: str | Path, grid: list[SWAAConfig], models: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"swaa_config": c.to_dict(), "model_list": models} for c in grid], indent=1) + "\n")
    load_settings(path)                                  # what we write must read back
    return path


GRID_FILES = {
    "paper_qwen3_4b.json": (36, ["Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507"], paper_grid),
    "paper_qwen3_30b_a3b.json": (48, ["Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B-Thinking-2507"],
                                 paper_grid),
    "paper_llama3_1_8b.json": (32, ["meta-llama/Llama-3.1-8B-Instruct"], paper_grid),
    "smollm2_135m.json": (30, ["default"], default_model_grid),
}


def main() -> None:
    root = Path(__file__).resolve().parent.parent / "data" / "settings"
    for name, (layers, models, fn) in GRID_FILES.items():
        print(write_settings(root / name, fn(layers), models))


if __name__ == "__main__":
    main()
