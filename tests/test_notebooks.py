"""The notebooks: each executes top to bottom in a real Jupyter kernel (nbclient, the engine under nbmake and papermill),
test-sized (FTLAB_NOTEBOOK_SMOKE names the tiny model: 2 steps), and the committed files are what notebooks/build.py
writes, without outputs."""

import importlib.util

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

spec = importlib.util.spec_from_file_location("build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def test_committed_notebooks_are_what_build_writes_and_hold_no_outputs():
    committed = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert committed == sorted(build.NOTEBOOKS)  # one per folder in the table, nothing stale
    for folder in build.NOTEBOOKS:
        on_disk = nbformat.read(ROOT / "notebooks" / f"{folder}.ipynb", as_version=4)
        assert [c.source for c in on_disk.cells] == [c.source for c in build.notebook(folder).cells], folder
        assert all(not c.get("outputs") for c in on_disk.cells if c.cell_type == "code")


@pytest.mark.parametrize("folder", sorted(build.NOTEBOOKS))
def test_notebook_runs_top_to_bottom(folder, tiny_model_64, tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAB_NOTEBOOK_SMOKE", str(tiny_model_64))  # the kernel inherits this process's environment
    monkeypatch.setenv("FTLAB_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "notebooks" / f"{folder}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # raises on any failing cell
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "test-sized run" in text and "exact match" in text.lower()
    assert (tmp_path / f"notebook_{folder}" / "metrics.json").is_file()
    shown = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
             if out.get("output_type") == "display_data"]
    assert any("text/html" in out["data"] for out in shown)  # the before/after answers table
