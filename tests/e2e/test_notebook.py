"""notebooks/researcher.ipynb runs headless (nbclient, a real ipykernel with its own event loop)
against a real grid, without errors, and reports a test accuracy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(600)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "researcher.ipynb"


def outputs_text(nb: Any) -> str:
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_the_researcher_notebook_runs(connect: Any, nats_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIUM_NATS_URL", nats_server.url)  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, "commit the notebook with its outputs cleared"

    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()

    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    text = outputs_text(nb)
    print(text)
    m = re.search(r"test accuracy: (\d\.\d+)", text)
    assert m, "the notebook printed no test accuracy"
    assert float(m.group(1)) >= 0.9
    assert "auction: w1 won" in text
    assert re.search(r"epoch 30/30 +loss", text)
