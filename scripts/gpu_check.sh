#!/usr/bin/env bash
# The whole GPU check in one command, under 8 minutes on one H100; everything lands in $OUT_DIR.
#   OUT_DIR=out/gpu bash scripts/gpu_check.sh
# 1. environment facts, 2. measured peaks, 3. MPT-7B and MPT-1B shapes (random bf16 weights) at
# batch 1/8/32, input 512, output 64 under hf_generate and hf_compiled, 4. the GPU-only tests,
# 5. (bounded, after the rest) MPT-7B at batch 1 under static_loop, the decode loop without generate.
# BUNDLE=1 packs everything into one archive, $OUT_DIR/gpu_check.tgz, for copying back as one file.
# Packages missing on the machine can be carried as wheels in .whl/ (installed to /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-out/gpu}"
mkdir -p "$OUT_DIR/results"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT_DIR/log.txt"; }

log "environment"
{ nvidia-smi; python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0]); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0)); \
print('transformers', transformers.__version__)"; } > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt" | tail -4

log "measured peaks"
timeout 60 python3 - > "$OUT_DIR/peaks.json" <<'PY'
import json, torch
from llmbench.roofline import lookup_peaks, measure_peaks
name = torch.cuda.get_device_name(0)
out = {"device_name": name}
for dtype, tdtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
    m = measure_peaks(torch.device("cuda"), tdtype)
    out[dtype] = {"measured_memory_bandwidth_gbs": m.memory_bandwidth_gbs, "measured_tflops": m.tflops,
                  "datasheet": vars(lookup_peaks(name, dtype))}
print(json.dumps(out, indent=1))
PY
cat "$OUT_DIR/peaks.json"

SWEEP=(batch_sizes=[1,8,32] input_lengths=[512] output_lengths=[64] "backends=[hf_generate,hf_compiled]"
       num_batches=5 num_warmup_batches=3 "results_dir=$OUT_DIR/results")
for model in 7b 1b; do
  log "MPT-$model"
  timeout "$([ $model = 7b ] && echo 270 || echo 150)" python3 benchmark.py "yamls/$model.yaml" "${SWEEP[@]}" 2>&1 | tee "$OUT_DIR/mpt-$model.txt" | grep -v "^[WI][0-9]\{4\} "
done

log "GPU-only tests"
timeout 100 python3 -m pytest -q -m gpu tests 2>&1 | tee "$OUT_DIR/gpu_tests.txt" | tail -15

log "MPT-7b static_loop, batch 1"
timeout 120 python3 benchmark.py yamls/7b.yaml "${SWEEP[@]}" batch_sizes=[1] "backends=[static_loop]" 2>&1 \
  | tee "$OUT_DIR/mpt-7b-static-loop.txt" | grep -v "^[WI][0-9]\{4\} " | tail -8
log "done"
if [ "${BUNDLE:-0}" = "1" ]; then
  (cd "$OUT_DIR" && tar czf /tmp/gpu_check.tgz . && find . -mindepth 1 -delete && mv /tmp/gpu_check.tgz .)
fi
