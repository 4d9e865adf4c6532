"""Every notebook executed through papermill with SMOKE=True (what CI runs), and failures named precisely."""
import json
from pathlib import Path

import nbformat
import pytest

from swaa.ui.notebooks import NOTEBOOKS, NotebookFailed, run_notebooks

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def test_notebooks_follow_the_frame():
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and "**Question:**" in nb.cells[0].source, name
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{name}: one cell tagged 'parameters'"
        for p in ("MODEL", "DEVICE", "SMOKE", "FIGURES", "OUT"):
            assert f"{p} = " in params[0].source, f"{name} lacks parameter {p}"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: commit it without outputs"


@pytest.mark.slow
def test_every_notebook_runs_in_smoke_mode_and_writes_its_figures(tmp_path):
    figures = tmp_path / "figures"
    timings = run_notebooks(smoke=True, out=tmp_path / "out", figures=figures, notebook_dir=NOTEBOOK_DIR,
                            progress=False)
    assert list(timings) == list(NOTEBOOKS)
    for name, expected in NOTEBOOKS.items():
        for f in expected:
            assert (figures / f).stat().st_size > 5000, f"{name}: {f} is empty"
        executed = nbformat.read(tmp_path / "out" / "notebooks" / name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors}"
    assert json.loads((tmp_path / "out" / "notebooks" / "timings.json").read_text())["smoke"] is True


def test_a_failing_cell_is_named(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    params = nbformat.v4.new_code_cell("SMOKE = False\nFIGURES = OUT = '.'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# broken"), params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(nb, tmp_path / "00_setup.ipynb")
    with pytest.raises(NotebookFailed, match=r"00_setup.ipynb failed in cell \d+ .*ZeroDivisionError: division by zero"):
        run_notebooks(["00_setup.ipynb"], out=tmp_path / "out", figures=tmp_path / "f", notebook_dir=tmp_path,
                      progress=False)
    with pytest.raises(ValueError, match="unknown notebooks \\['99_x.ipynb'\\]"):
        run_notebooks(["99_x.ipynb"], out=tmp_path, figures=tmp_path)
    with pytest.raises(ValueError, match="no swaa notebooks in .*--notebooks DIR"):
        run_notebooks(out=tmp_path, figures=tmp_path, notebook_dir=tmp_path / "elsewhere")
