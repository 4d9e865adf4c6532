"""The `swaa` command. Subcommands: reproduce (the main job), info (environment and attention backends)."""
from __future__ import annotations

import argparse
import sys


def _cmd_reproduce(a) -> int:
    from .reproduce import reproduce
    reproduce(a.out, a.figures, n_tokens=a.tokens, model=a.model)
    return 0


def _cmd_info(a) -> int:
    import platform

    import torch
    import transformers

    from .attention import available_backends
    print(f"python {platform.python_version()} | torch {torch.__version__} | transformers {transformers.__version__}")
    print(f"device: {'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    for name, why in available_backends().items():
        print(f"  backend {name:10s} {'available' if why is None else 'unavailable: ' + why}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="swaa", description="Sliding Window Attention Adaptation workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reproduce", help="run the main job headless and write figures/")
    r.add_argument("--out", default="out", help="working folder for resumable results (git-ignored)")
    r.add_argument("--figures", default="figures")
    r.add_argument("--tokens", type=int, default=1536, help="length of the offline text used for the loss")
    r.add_argument("--model", default=None, help="model folder or hub id (default: SmolLM2-135M-Instruct)")
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
