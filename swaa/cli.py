"""The `swaa` command. Subcommands: reproduce (every notebook through papermill), info (environment, backends)."""
from __future__ import annotations

import argparse
import sys


def _cmd_reproduce(a) -> int:
    import time

    from .reproduce import NotebookFailed, run_notebooks
    params = {}
    if a.model:
        params["MODEL"] = a.model
    if a.device:
        params["DEVICE"] = a.device
    t0 = time.time()
    try:
        timings = run_notebooks(a.notebooks or None, smoke=a.smoke, out=a.out, figures=a.figures, parameters=params)
    except NotebookFailed as e:
        print(f"swaa reproduce: {e}", file=sys.stderr)
        return 1
    print(f"swaa reproduce: {len(timings)} notebooks in {time.time() - t0:.0f} s; figures in {a.figures}/")
    return 0


def _cmd_info(a) -> int:
    from .envinfo import environment_report
    for key, value in environment_report().items():
        print(f"{key:18s} {value}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="swaa", description="Sliding Window Attention Adaptation workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reproduce", help="run the main job headless and write figures/")
    r.add_argument("--out", default="out", help="working folder for resumable results (git-ignored)")
    r.add_argument("--figures", default="figures")
    r.add_argument("notebooks", nargs="*", help="notebook names (default: all, in order)")
    r.add_argument("--smoke", action="store_true", help="SMOKE=True: tiny sizes, seconds per notebook")
    r.add_argument("--model", default=None, help="MODEL parameter: folder or hub id (default: SmolLM2-135M-Instruct)")
    r.add_argument("--device", default=None, help="DEVICE parameter (default: cpu)")
    r.set_defaults(fn=_cmd_reproduce)
    i = sub.add_parser("info", help="versions, device and attention backends")
    i.set_defaults(fn=_cmd_info)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("\ninterrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
