"""notebooks/researcher.ipynb runs headless (nbclient, a real ipykernel with its own event loop)
against a real grid, twice in a row on the same grid, without errors: each run reports a test
accuracy, the auction's table, the curves as an image, and a cost that is its own job's (the
balance before and after, not hard-coded); the last cell attaches to the finished job again and
replays it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(900)

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


def run_once() -> Any:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, "commit the notebook with its outputs cleared"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    return nb


def cell_of(nb: Any, starts: str) -> Any:
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts)]
    return cell


def bar_of(nb: Any, cell: Any) -> tuple[float, float, str]:
    """The tqdm widget a cell displayed, as nbclient stored its last state: (value, max, text)."""
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (view,) = [o["data"]["application/vnd.jupyter.widget-view+json"] for o in cell.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # fmt: skip
    children = [states[c.removeprefix("IPY_MODEL_")] for c in states[view["model_id"]]["state"]["children"]]
    (bar,) = [c["state"] for c in children if c["model_name"] == "FloatProgressModel"]
    text = " ".join(c["state"]["value"] for c in children if c["model_name"] == "HTMLModel").replace("\u2007", " ")
    return bar["value"], bar["max"], text


def credits(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"no {pattern!r} in the notebook's output"
    return float(m.group(1))


def check_run(nb: Any) -> dict[str, float]:
    text = outputs_text(nb)
    print(text)
    assert credits(r"test accuracy: (\d\.\d+)", text) >= 0.9
    assert "auction: w1 won among 1 bids" in text
    assert re.search(r"epoch 30/30 +loss \d\.\d+ +val_loss \d\.\d+ +val_accuracy \d\.\d+", text)

    # The auction's table, from the awarded event and the workers' asks.
    table = cell_of(nb, "awards = ").outputs[-1]["data"]
    assert "text/html" in table
    for column in ("worker", "bids", "price per hour (credits/h)", "estimated duration (s)", "total (credits)"):
        assert column in table["text/plain"] or column in table["text/html"]
    # The curves: one image of a matplotlib figure (shown once, not also by pyplot).
    plots = [o for o in cell_of(nb, "job.plot()").outputs if "image/png" in o.get("data", {})]
    assert len(plots) == 1

    before = credits(r"balance before: researcher: (-?\d+\.\d{6}) credits", text)
    after = credits(r"balance after: +researcher: (-?\d+\.\d{6}) credits", text)
    spent = credits(r"spent: (\d+\.\d{6}) credits", text)
    paid = credits(r"the job paid (\d+\.\d{6})\)", text)
    assert spent == pytest.approx(before - after, abs=1e-9) and spent == paid and 0 < spent <= 2.0

    # The bar of the training: the job's name, the winner and its price in credits, no rates
    # of tqdm's own (a replay would make them up).
    value, top, text = bar_of(nb, cell_of(nb, "final = job.wait()"))
    assert (value, top) == (30, 30)
    assert re.search(r"^digits-mlp completed on w1 at 0\.\d{6} credits: 100%.*30/30 epochs, loss=", text), text
    assert "epochs/s" not in text and "s/epoch" not in text and "it/s" not in text
    # The last cell attached to the finished job again: it replayed to the end, under a short id.
    again = cell_of(nb, "again = grid.job(job.id).wait()")
    assert "COMPLETED" in again.outputs[-1]["data"]["text/plain"]
    value, top, text = bar_of(nb, again)
    assert (value, top) == (30, 30)
    assert re.match(r"^[0-9a-f]{8} completed on w1 at 0\.\d{6} credits: 100%.*30/30 epochs", text), text
    return {"before": before, "after": after}


def test_the_researcher_notebook_runs_twice_on_one_grid(
    connect: Any, nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIUM_NATS_URL", nats_server.url)  # the kernel inherits the environment
    creds_dir = nats_server.keys.parent / "notebook-creds"  # laid out like the local grid's
    creds_dir.mkdir(exist_ok=True)
    for principal in ("researcher", "operator"):
        shutil.copy(nats_server.principal_creds(principal), creds_dir / f"{principal}.creds")
    monkeypatch.setenv("HELIUM_CREDS_DIR", str(creds_dir))
    first = check_run(run_once())
    second = check_run(run_once())
    # The second run's balances are the grid's, not the first run's or hard-coded ones.
    assert second["before"] == pytest.approx(first["after"], abs=1e-9)
    assert second["after"] < first["after"]
