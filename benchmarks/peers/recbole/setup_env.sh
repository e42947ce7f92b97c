#!/usr/bin/env bash
# Build an isolated, git-ignored environment for RecBole 1.2.1 (separate from ours).
#
#   bash benchmarks/peers/recbole/setup_env.sh            # -> benchmarks/peers/recbole/.venv
#   RECBOLE_VENV=/some/where bash .../setup_env.sh        # elsewhere
#
# RecBole 1.2.1 with current torch needs: numpy<2 (it uses np.float), pandas<3,
# setuptools<81 (pkg_resources), and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 at run time
# (its checkpoints pickle a Config object; run_recbole.py sets it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RECBOLE_VENV:-$HERE/.venv}"
PY="${PYTHON:-python3.11}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # CPU wheel; PIP_FIND_LINKS / --index-url as you need

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip "setuptools<81" wheel
# torch first, with setuptools pinned alongside so the resolver cannot lift it
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" "setuptools<81" \
  ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$VENV/bin/python" -m pip install --quiet "recbole==1.2.1" "numpy<2" "pandas<3" "setuptools<81" psutil
"$VENV/bin/python" - <<'PY'
import os
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import numpy, pandas, torch, recbole
print("recbole", recbole.__version__, "torch", torch.__version__,
      "numpy", numpy.__version__, "pandas", pandas.__version__)
PY
