#!/usr/bin/env bash
# Create .venv with the CPU build of PyTorch and invertible (editable) with its test and bench extras.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build. Where the default
# index serves CUDA wheels, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu picks PyTorch's CPU one.
.venv/bin/pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/pip install -q -e ".[test,bench]"
