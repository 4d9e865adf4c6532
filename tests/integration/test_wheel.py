"""`pip install .` (not editable) gives a working swaa: the wheel is built and installed into a temporary folder,
and the command runs from outside the repository (the cost model's rates ship inside the package)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_works_outside_the_repository(tmp_path):
    wheels, site, away = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    away.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)], check=True,
                   timeout=300, cwd=tmp_path)
    (wheel,) = wheels.glob("swaa-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    assert (site / "swaa" / "speed" / "h200_rates.json").is_file()
    assert not (site / "notebooks").exists() and not (site / "benchmarks").exists()
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("TRITON_INTERPRET", None)
    run = lambda *args: subprocess.run([sys.executable, "-c", "import sys; from swaa.cli import main; sys.exit(main())",
                                        *args], cwd=away, env=env, capture_output=True, text=True, timeout=300)
    where = subprocess.run([sys.executable, "-c", "import swaa; print(swaa.__file__)"], cwd=away, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr     # the wheel, not the checkout
    r = run("--help")
    assert r.returncode == 0 and "advise" in r.stdout, r.stderr
    r = run("advise", "--shape", "qwen3-4b", "--length", "32768")
    assert r.returncode == 0, r.stderr
    assert "best:" in r.stdout and "swa=" in r.stdout, r.stdout
    r = run("reproduce")                          # no notebooks here: one line that says how, exit 2
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--notebooks DIR" in r.stderr, r.stderr
    script = site / "bin" / "swaa"
    if script.exists():                           # the console script pip wrote
        r = subprocess.run([str(script), "--help"], cwd=away, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
