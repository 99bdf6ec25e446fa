"""The notebooks: each executes top to bottom in a real Jupyter kernel (nbclient, the engine under nbmake and papermill),
test-sized (FTLAB_NOTEBOOK_SMOKE names the tiny model: 2 steps), and the committed files are what notebooks/build.py
writes, without outputs.

Marked `notebooks`: not in `make test` (the suite's 15 minutes are spoken for) but in `make test-notebooks`, which
.ci/run runs after it.
"""

import importlib.util

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

from ftlab import gguf

pytestmark = pytest.mark.notebooks

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
def test_notebook_runs_top_to_bottom(folder, request, tmp_path, monkeypatch):
    # 09 converts to GGUF: llama.cpp's converter needs SmolLM2's own tokenizer, so its tiny model has that one.
    smoke = request.getfixturevalue("smol_tiny" if folder == "09_export" else "tiny_model_64")
    monkeypatch.setenv("FTLAB_NOTEBOOK_SMOKE", str(smoke))  # the kernel inherits this process's environment
    monkeypatch.setenv("FTLAB_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "notebooks" / f"{folder}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # raises on any failing cell
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "\n".join(out.get("text", "") for out in outputs)
    shown = [out["data"] for out in outputs if out.get("output_type") == "display_data"]
    assert "test-sized run" in text
    lesson = build.NOTEBOOKS[folder]
    out = tmp_path / f"notebook_{folder}"
    for name, *_ in lesson.needs:  # what the lesson starts from was trained first, into the runs folder
        assert (tmp_path / name / "metrics.json").is_file(), name
    if lesson.kind == "training":
        assert (out / "metrics.json").is_file() and "exact match" in text.lower()
    else:
        assert (out / "results.json").is_file()
        assert any("text/markdown" in data and "exact" in data["text/markdown"] for data in shown)  # results.md
    assert any("text/html" in data for data in shown)  # a table of answers side by side
    if lesson.figure:
        assert any("image/png" in data for data in shown)
    if folder == "09_export":
        gguf_files = sorted(p.name for p in out.glob("*.gguf"))
        assert gguf_files == ([] if gguf.missing() else ["model-f16.gguf", "model-q8_0.gguf"])
        assert "bye" in text  # the chat cell ran the smallest copy to the end of its input
