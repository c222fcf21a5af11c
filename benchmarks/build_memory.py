"""Fast start: peak host memory and time to build a random-weight MPT-1B-shaped bf16 model on CPU.

    python benchmarks/build_memory.py [--runs 3] [--yaml yamls/1b.yaml] [--out benchmarks/build_memory.json]

Compares llmbench's route (models.build_model: constructed directly in bf16 on the target device)
with the plain route (transformers ``from_config`` in fp32, then ``.to(bfloat16)``). Each build runs
in a fresh process so peaks do not leak between runs; peak memory is the process's peak resident
set size (VmHWM) minus its resident size just before the build (interpreter, torch, transformers).
Reports the median of ``--runs`` builds per route and the ratios.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})

def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

from transformers import AutoModelForCausalLM
from llmbench.config import load_config
from llmbench.models import build_hf_config, build_model
cfg = load_config({yaml!r}, ["device=cpu", "model_dtype=bf16"])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss_kib("VmRSS")
start = time.perf_counter()
if {route!r} == "llmbench":
    model, info = build_model(cfg, torch.device("cpu"))
else:
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(build_hf_config(cfg.model, cfg.max_seq_len))
    model = model.to(torch.bfloat16).eval()
seconds = time.perf_counter() - start
param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
assert all(p.dtype == torch.bfloat16 for p in model.parameters())
print(json.dumps({{"seconds": seconds, "peak_above_baseline_bytes": (rss_kib("VmHWM") - before) * 1024,
                  "param_bytes": param_bytes}}))
"""


def build_once(route: str, yaml_path: str) -> dict:
    code = CHILD.format(root=ROOT, yaml=yaml_path, route=route)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--yaml", default=os.path.join(ROOT, "yamls", "1b.yaml"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "build_memory.json"))
    args = parser.parse_args()
    report = {"yaml": os.path.relpath(args.yaml, ROOT), "runs": args.runs, "cpu_count": os.cpu_count()}
    for route in ("llmbench", "from_config_then_cast"):
        runs = [build_once(route, args.yaml) for _ in range(args.runs)]
        param_bytes = runs[0]["param_bytes"]
        peak = statistics.median(r["peak_above_baseline_bytes"] for r in runs)
        report[route] = {
            "seconds_median": statistics.median(r["seconds"] for r in runs),
            "seconds_all": [r["seconds"] for r in runs],
            "peak_above_baseline_gib_median": peak / 1024 ** 3,
            "peak_over_model_bytes": peak / param_bytes,
            "param_bytes": param_bytes,
        }
        print(f"{route:>22}: {report[route]['seconds_median']:.1f} s, peak "
              f"{report[route]['peak_above_baseline_gib_median']:.2f} GiB = "
              f"{report[route]['peak_over_model_bytes']:.2f}x the model's {param_bytes / 1024 ** 3:.2f} GiB")
    ours, plain = report["llmbench"], report["from_config_then_cast"]
    report["speedup"] = plain["seconds_median"] / ours["seconds_median"]
    report["memory_ratio"] = plain["peak_above_baseline_gib_median"] / ours["peak_above_baseline_gib_median"]
    print(f"llmbench route: {report['speedup']:.2f}x faster, {report['memory_ratio']:.2f}x less peak memory")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
