#!/usr/bin/env bash
# `make demo`: a local grid on this machine, the researcher notebook run headless against it
# (auction outcome, loss per epoch, test accuracy), then the grid stopped, whatever happened.
# `deploy/demo.sh notebooks/gpu_owner.ipynb` (`make demo-owner`) runs the GPU owner's instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
trap 'deploy/grid.sh down' EXIT
deploy/grid.sh up
source .helium/grid/env
export HELIUM_NATS_URL HELIUM_CREDS_DIR HELIUM_BIN_DIR
notebook=${1:-notebooks/researcher.ipynb}
echo "running $notebook against $HELIUM_NATS_URL"
start=$(date +%s)
.venv/bin/python deploy/run_notebook.py "$notebook"
echo "notebook finished in $(( $(date +%s) - start )) s"
