"""docs/tutorial.ipynb runs top to bottom (nbclient, the python3 Jupyter kernel) on a tiny
budget: 4 iterations on shapes, 4 of fine-tuning on the custom dataset it makes, and the table of
the four test modes at the end."""

import os

import nbformat
from tests.conftest import REPO
from nbclient import NotebookClient


def test_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORIAL_ITERS", "4")
    monkeypatch.setenv("TUTORIAL_FINETUNE_ITERS", "4")
    monkeypatch.setenv("TUTORIAL_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(os.path.join(REPO, "docs", "tutorial.ipynb"), as_version=4)
    assert all(
        not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"
    )  # committed clean
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.join(REPO, "docs")}},
    ).execute()
    text = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    images = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 2  # the drawn detections and the curves
    assert "backbone: from scratch" in text  # the test's empty pretrained cache
    for mode in ("fc", "conv", "double", "fused"):
        assert f"\n{mode:8s} " in text, text[-2000:]
    for path in ("dh_ext_shapes/model_final.pth", "dh_ext_toys/model_final.pth", "modes/eval_results.json",
                 "custom/toys_train.json", "custom/toys_val/0011.jpg"):  # fmt: skip
        assert (tmp_path / path).exists(), path
