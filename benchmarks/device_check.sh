#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared script, for a session lent the H200 (`device` tool).
# Estimated at about 5 minutes there (not yet run on a GPU). The device image has torch, numpy,
# scipy, tqdm and matplotlib but no faiss, and ../shared does not travel, so first, in the repo root:
#   mkdir -p .devdata && cp -r ../shared/data/FLO .devdata/ && echo /.devdata/ >> .git/info/exclude
# then call the device tool's run with command "bash benchmarks/device_check.sh",
# carry [".devdata"], timeout_s 480. Figures land in $OUT (speed.txt, eval_1m.txt, tests.txt).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 benchmarks/speed.py --device cuda --dataset .devdata/FLO --rounds 3 --baseline_fraction 0.05 2>&1 | tee "$out/speed.txt"
python3 benchmarks/eval_speed.py --device cuda --queries 1000 --gallery 1000000 --dim 1024 --ks 50 2>&1 | tee "$out/eval_1m.txt"
python3 -m pytest -q -p no:cacheprovider tests/experiments/test_trainer.py tests/evaluation/test_metrics.py tests/experiments/test_captions.py 2>&1 | tee "$out/tests.txt"
