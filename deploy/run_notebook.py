"""Runs a notebook headless against the grid and prints what its cells printed.

Example:
    HELIUM_NATS_URL=nats://127.0.0.1:4222 python deploy/run_notebook.py notebooks/researcher.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Executes every cell in order (raising on the first error) and returns the notebook."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def printed_text(nb: nbformat.NotebookNode) -> str:
    """The stdout and plain-text results of all cells, in order."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                parts.append(out.get("text", ""))
            elif out.get("output_type") == "execute_result":
                parts.append(out.get("data", {}).get("text/plain", "") + "\n")
    return "".join(parts)


if __name__ == "__main__":
    notebook = Path(sys.argv[1] if len(sys.argv) > 1 else "notebooks/researcher.ipynb")
    print(printed_text(run(notebook)), end="")
