#!/usr/bin/env bash
# Sets up the ONNX example: a virtual environment with onnxruntime (from PyPI) and a small CPU-bound MLP model,
# built here from seeded random weights (no model download). Run once before `plateau run scenarios/onnx-threads.toml`.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check 'onnxruntime==1.32.0' 'onnx==1.23.2' 'numpy==2.4.6'
.venv/bin/python make_model.py model.onnx
echo "ready: $(pwd)/model.onnx"
