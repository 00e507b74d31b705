"""Benchmark: artifact throughput through a running grid against a raw local file copy.

For each size, side by side in one run: a raw copy of a file of that size (``shutil.copyfile``
between two files of the grid's store directory's filesystem, page cache warm, like the
store's own writes), the client's upload into staging (client → NATS → broker → object store),
and the client's download of it back as the data of a job that waits for a worker
(object store → broker → NATS → client), each SHA-256-verified end to end. Prints MB/s and
the ratio to the raw copy.

Example:
    HELIUM_NATS_URL=nats://127.0.0.1:4222 .venv/bin/python tests/bench/artifacts.py --sizes 1,100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save

from helium_grid import AsyncGrid, Grid
from helium_grid._artifacts import upload
from helium_grid._state import manifest
from helium_grid._submission import Submission

MB = 1_000_000


def data_blob(size: int) -> tuple[bytes, int]:
    """A valid safetensors data file of about ``size`` bytes (x: float32 rows of 1024, y), and
    its row count."""
    rows = max(1, size // (1024 * 4 + 8))
    g = torch.Generator().manual_seed(0)
    blob = save({"x": torch.rand(rows, 1024, generator=g), "y": torch.zeros(rows, dtype=torch.int64)})
    return blob, rows


def raw_copy(blob: bytes, where: Path) -> float:
    src, dst = where / "src.bin", where / "dst.bin"
    src.write_bytes(blob)
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    elapsed = time.perf_counter() - start
    src.unlink()
    dst.unlink()
    return elapsed


async def through_grid(
    url: str, creds: Path, blob: bytes, rows: int, model: bytes, state: list
) -> tuple[float, float]:
    async with await AsyncGrid.connect(url, creds=creds / "researcher.creds") as grid:
        start = time.perf_counter()
        data_upload, _ = await upload(grid._request, "data", blob, preferred_chunk=grid._chunk)
        up = time.perf_counter() - start
        model_upload, _ = await upload(grid._request, "model", model, preferred_chunk=grid._chunk)
        sub = Submission(
            model_bytes=model,
            data_bytes=b"",
            training={"epochs": 1, "batch_size": 1, "loss": "cross_entropy", "optimizer": {"kind": "sgd", "lr": 0.1}},
            # No worker asks as little as 1 micro-credit an hour: the job waits, its data stays.
            requirements={"device": "any", "max_price_per_hour": 1, "budget": 1, "deadline_ms": 0},
            work={"parameters": 1024 * 2 + 2, "samples": rows, "epochs": 1},
            name="artifact-bench",
            state=state,
        )
        body = sub.submit_body(model_upload=model_upload, data_upload=data_upload)
        job_id = (await grid._request("job.submit", body))["job_id"]
        try:
            start = time.perf_counter()
            back = await grid._download(job_id, "data")
            down = time.perf_counter() - start
            assert back == blob
        finally:
            await grid._request("job.cancel", {"job_id": job_id})
        return up, down


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,1000", help="MB, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", default=os.environ.get("HELIUM_STORE_DIR", tempfile.gettempdir()))
    args = parser.parse_args()
    url = os.environ.get("HELIUM_NATS_URL", "nats://127.0.0.1:4222")
    creds = Path(os.environ.get("HELIUM_CREDS_DIR", ".helium/grid/creds"))
    with Grid(url, creds=creds / "operator.creds") as operator:
        operator.grant("researcher", 1)
    buf = torch.jit.script(torch.nn.Linear(1024, 2))
    import io

    out = io.BytesIO()
    torch.jit.save(buf, out)
    model = out.getvalue()
    state = manifest(buf)
    print(f"{'size':>8} {'raw copy MB/s':>14} {'upload MB/s':>12} {'ratio':>6} {'download MB/s':>14} {'ratio':>6}")
    for size_mb in (int(s) for s in args.sizes.split(",")):
        blob, rows = data_blob(size_mb * MB)
        raws, ups, downs = [], [], []
        for _ in range(args.runs):
            raws.append(raw_copy(blob, Path(args.store)))
            up, down = asyncio.run(through_grid(url, creds, blob, rows, model, state))
            ups.append(up)
            downs.append(down)
        n = len(blob) / MB
        raw, up, down = (n / statistics.median(v) for v in (raws, ups, downs))
        print(f"{size_mb:>6}MB {raw:>14.0f} {up:>12.0f} {up / raw:>6.2f} {down:>14.0f} {down / raw:>6.2f}")


if __name__ == "__main__":
    main()
