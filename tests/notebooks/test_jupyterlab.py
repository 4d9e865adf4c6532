"""`make lab` for real: JupyterLab started by the Makefile's own command line on a free port, listening on this
machine only and answering only with its token; a notebook fetched through its REST API with the token."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port, listening_addresses

ROOT = Path(__file__).resolve().parents[2]


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def _lab_command() -> str:
    """The jupyter line of `make lab` (dry run, this environment's venv), as the Makefile writes it."""
    venv = Path(sys.executable).parent.parent
    out = subprocess.run(["make", "-n", "lab", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    (line,) = [x for x in out.splitlines() if "jupyter lab" in x]
    return line


@contextmanager
def lab_server(tmp_path, timeout: float = 60):
    """JupyterLab started by `make lab`'s own line on a free loopback port, its config and runtime files under
    ``tmp_path``; yields (base URL, token, port) once its REST API answers, and stops it afterwards."""
    port = free_port()
    line = _lab_command()
    assert "--ip 127.0.0.1" in line and "token" not in line.lower()     # a token is never switched off
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(["bash", "-c", f"exec {line} --port={port} --ServerApp.port_retries=0"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            info = list((tmp_path / "rt").glob("jpserver-*.json"))
            try:
                token = json.loads(info[0].read_text())["token"] if info else None
                if token and _get(f"{base}/api/status", token)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
            assert time.time() < deadline, f"JupyterLab did not answer within {timeout:.0f} s"
            time.sleep(0.5)
        yield base, token, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_on_loopback_with_a_token(tmp_path):
    with lab_server(tmp_path) as (base, token, port):
        status, body = _get(f"{base}/api/status", token)
        assert status == 200 and "started" in body
        assert listening_addresses(port) == {"127.0.0.1"}                # this machine only
        status, nb = _get(f"{base}/api/contents/01_attention_patterns.ipynb?content=1", token)
        assert status == 200 and nb["type"] == "notebook"
        cells = nb["content"]["cells"]
        assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
        assert any("SWAAPanel" in c["source"] for c in cells)
        _, listing = _get(f"{base}/api/contents/", token)
        assert {"00_setup.ipynb", "01_attention_patterns.ipynb"} <= {c["name"] for c in listing["content"]}
        _, specs = _get(f"{base}/api/kernelspecs", token)
        assert "python3" in specs["kernelspecs"]
        with pytest.raises(urllib.error.HTTPError) as e:                 # no token, no notebook
            _get(f"{base}/api/contents/01_attention_patterns.ipynb")
        assert e.value.code == 403
