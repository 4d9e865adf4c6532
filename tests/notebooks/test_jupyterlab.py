"""JupyterLab for real: started on a free localhost port, a notebook fetched through its REST API with the token."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


@pytest.mark.slow
def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), "swaa-test-token"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
           "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                status, body = _get(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
                assert time.time() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        assert status == 200 and "started" in body
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
    finally:
        proc.terminate()
        proc.wait(timeout=30)
