#!/usr/bin/env bash
# The GPU half of the speed issue, as one short run on a lent device machine (see the library's
# device README). It reads its inputs from .device/ (ignored by git, sent with `carry`):
#
#   here, once:  echo /.device/ >> .git/info/exclude
#                mkdir -p .device && cp ../shared/device-wheels/*.whl .device/
#                cp -r ../shared/corpora/ptb .device/
#   then:        run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=540)
#
# It prints (and writes under $OUT) the bench at the PTB shape in fp32/TF32 (eager cells), with
# compiled cells (QAT LSTM, mLSTM, QAT mLSTM), with bf16 autocast, and one PTB epoch in fp32 and in bf16-mixed precision with
# the validation perplexity of each (the bf16 target: within 2% of fp32).
#
# Dry run on a CPU (checks the script, not the speed): DRY_RUN=1 bash scripts/device_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  DEVICE=cpu SHAPE=tiny TRAINER=cpu
  EPOCH_ARGS=(trainer.limit_train_batches=20 trainer.limit_val_batches=5
              trainer.limit_test_batches=5 data.bptt=20 model.hidden_size=64 model.emb_size=32)
  BENCH_ARGS=(steps=1 warmup=1 rounds=1)
  # one variant per compiled bench: the command lines are checked, not every compilation
  # (tests/models/test_recurrent.py compiles each cell)
  COMPILED=[awd_lstm_qat] BF16=[awd_lstm]
  export AWD_DATA_DIR=${AWD_DATA_DIR:-../shared/corpora}
else
  DEVICE=cuda SHAPE=ptb TRAINER=gpu EPOCH_ARGS=() BENCH_ARGS=(warmup=5 steps=20 rounds=3)
  COMPILED=[awd_lstm_qat,mlstm,mlstm_qat] BF16=[awd_lstm,mlstm]
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/*.whl || exit 1
  export PYTHONPATH=.:/tmp/site AWD_DATA_DIR=.device
  nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
export PYTHONUNBUFFERED=1 AWD_CACHE_DIR=/tmp/awd-cache

bench() { python3 -m src.bench shape=$SHAPE device=$DEVICE engine=false "${BENCH_ARGS[@]}" "$@"; }
bench hydra.run.dir=/tmp/bench-fp32 2>&1 | tee "$OUT/bench_fp32.log"
bench compile_cell=true "variants=$COMPILED" hydra.run.dir=/tmp/bench-comp \
  2>&1 | tee "$OUT/bench_compiled.log"
# amp_twins=false: the fp32 rows are bench_fp32.log and bench_compiled.log already
bench amp=bfloat16 amp_twins=false compile_cell=true "variants=$BF16" \
  hydra.run.dir=/tmp/bench-bf16 2>&1 | tee "$OUT/bench_bf16.log"

epoch() {  # one PTB epoch with the paper's model, validation at its end (no test pass)
  local start=$SECONDS
  python3 -m src.train experiment=ptb_awd trainer=$TRAINER trainer.max_epochs=1 logger=csv \
    test=false trainer.enable_progress_bar=false hydra.run.dir="/tmp/run-$1" \
    "${EPOCH_ARGS[@]}" "${@:2}" 2>&1 | tail -2
  echo "epoch $1: $((SECONDS - start)) s wall, start-up and validation included"
  cp "/tmp/run-$1/results.json" "$OUT/epoch_$1.json"
}
epoch fp32 | tee "$OUT/epoch_fp32.log"
epoch bf16 trainer.precision=bf16-mixed | tee "$OUT/epoch_bf16.log"
OUT=$OUT python3 - <<'PY'
import json, os
out = os.environ["OUT"]
a, b = (json.load(open(f"{out}/epoch_{k}.json")) for k in ("fp32", "bf16"))
print(f"one PTB epoch: val ppl fp32 {a['val/ppl']:.2f}, bf16-mixed {b['val/ppl']:.2f} "
      f"({100 * (b['val/ppl'] / a['val/ppl'] - 1):+.2f}%)")
PY
