"""Where a decode step's time goes: device kernels vs. the host, for each backend.

    python benchmarks/decode_profile.py yamls/7b.yaml [key=value ...] [--out DIR] [--top 12]

For the YAML's first cell (first batch size and input length, first output length of at least
2) and each of its ``backends``, after the backend's warm-up:

- ``tpot_ms``: median decode time per token of 3 timed calls, measured as benchmark.py does;
- ``device_ms_per_step``: the device's kernel time per decode step, from torch.profiler: the
  kernels of an N-token call minus those of a 1-token call (prefill only), over N - 1 steps;
- ``host_ms_per_step`` = ``tpot_ms - device_ms_per_step``: time the device sat idle in each
  step, waiting for the host (Python, launches, syncs). Near 0 means the step is device-bound
  and only faster kernels help; large means the loop around the kernels is the bottleneck;
- ``mbu`` of the TPOT and ``device_mbu`` of the kernel time alone (what MBU would be with a
  free host), against the same peaks as the results rows;
- the kernels that take the most time per step.

CUDA only for the device/host split (kernel times need CUPTI); on a CPU the script still
times the backends and lists the ops with the most self time per step, and the device fields
are null. Writes ``decode_profile.json`` under ``--out`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TIMED_CALLS = 3


def kernel_times_us(profile, device_type: str) -> Dict[str, Dict[str, float]]:
    """Total self time (µs) and count per kernel (CUDA) or op (CPU) name in one profile."""
    from torch.autograd import DeviceType

    table: Dict[str, Dict[str, float]] = {}
    for event in profile.key_averages():
        if event.is_user_annotation:  # spans over other events: counting it would count them twice
            continue
        if device_type == "cuda":
            if event.device_type != DeviceType.CUDA:
                continue
            time_us = event.self_device_time_total
        else:
            time_us = event.self_cpu_time_total
        if time_us > 0:
            table[event.key] = {"us": float(time_us), "count": float(event.count)}
    return table


def per_step(long_call: Dict[str, Dict[str, float]], prefill_call: Dict[str, Dict[str, float]],
             steps: int) -> Dict[str, Dict[str, float]]:
    """Each name's time and calls per decode step: the long call's minus the prefill-only call's,
    over the decode steps. Names whose difference is not positive (prefill-only work) drop out."""
    out = {}
    for name, entry in long_call.items():
        base = prefill_call.get(name, {"us": 0.0, "count": 0.0})
        us = entry["us"] - base["us"]
        if us > 0:
            out[name] = {"ms_per_step": us / 1e3 / steps, "calls_per_step": (entry["count"] - base["count"]) / steps}
    return out


def profile_call(backend, ids, mask, output_length: int, device) -> Dict[str, Dict[str, float]]:
    """The kernel table of one generate call of ``output_length`` tokens."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from llmbench.timing import sync

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        with torch.inference_mode():
            backend.generate(ids, mask, output_length)
        sync(device)
    return kernel_times_us(prof, device.type)


def first_cell(cfg):
    """(batch, input, output) profiled: the first batch size and input length, the first output
    length with a decode step."""
    return cfg.batch_sizes[0], cfg.input_lengths[0], next(n for n in cfg.output_lengths if n >= 2)


def check_profilable(cfg) -> None:
    """What this script cannot profile, as one-line errors before any model is built."""
    from llmbench.config import ConfigError

    if cfg.use_deepspeed:
        raise ConfigError("use_deepspeed=True is invalid here: decode_profile.py profiles the plain model's "
                          "backends; set use_deepspeed=false")
    if isinstance(cfg.batch_sizes, str):  # 'auto': a search, not a batch size
        raise ConfigError(f"batch_sizes={cfg.batch_sizes!r} is invalid here: give a list; the first entry is profiled")
    if not any(n >= 2 for n in cfg.output_lengths):
        raise ConfigError(f"output_lengths={list(cfg.output_lengths)} is invalid here: needs a value of at least 2 "
                          "(a decode step to profile)")


def profile_backend(name: str, model, cfg, device, info, shape, peaks, top: int) -> Dict[str, object]:
    import torch

    from llmbench.backends import build_backend
    from llmbench.roofline import roofline_fields
    from llmbench.sweep import make_inputs, timed_generate

    batch, input_length, output_length = first_cell(cfg)
    ids, mask = make_inputs(cfg.seed, batch, input_length, info.vocab_size, device)
    backend = build_backend(name, model, cfg, device)
    try:
        with torch.inference_mode():
            for _ in range(max(cfg.num_warmup_batches, 2)):  # compiles here, as the sweep's warm-up does
                backend.generate(ids, mask, output_length)
                backend.generate(ids, mask, 1)
            tpot_ms = statistics.median(timed_generate(backend, ids, mask, output_length, device)["tpot_s"] * 1e3
                                        for _ in range(TIMED_CALLS))
        steps = output_length - 1
        kernels = per_step(profile_call(backend, ids, mask, output_length, device),
                           profile_call(backend, ids, mask, 1, device), steps)
        stats = backend.compile_stats()
    finally:
        backend.close()
    roofline = roofline_fields(shape, peaks, batch, input_length, output_length, ttft_ms=None, tpot_ms=tpot_ms)
    limit_ms = roofline["tpot_limit_ms"]
    device_ms = sum(k["ms_per_step"] for k in kernels.values()) if device.type == "cuda" else None
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1]["ms_per_step"])
    listed_ms = sum(v["ms_per_step"] for _, v in ranked[:top])
    return {
        "backend": name, "batch_size": batch, "input_length": input_length, "output_length": output_length,
        "tpot_ms": tpot_ms,
        "device_ms_per_step": device_ms,
        # TPOT and kernel time come from different calls: a device-bound step can show a few µs below 0.
        "host_ms_per_step": tpot_ms - device_ms if device_ms is not None else None,
        "device_fraction": device_ms / tpot_ms if device_ms is not None else None,
        **{k: roofline[k] for k in ("decode_bytes_per_step", "tpot_limit_ms", "peak_memory_bandwidth_gbs",
                                    "peaks_source", "mbu")},
        "device_mbu": limit_ms / device_ms if limit_ms and device_ms else None,
        **stats,
        "distinct_kernels" if device.type == "cuda" else "distinct_ops": len(ranked),
        "calls_per_step": sum(v["calls_per_step"] for _, v in ranked),
        "ms_per_step_outside_top": sum(v["ms_per_step"] for _, v in ranked) - listed_ms,
        "top_kernels" if device.type == "cuda" else "top_ops": [
            {"name": k, "ms_per_step": round(v["ms_per_step"], 4), "calls_per_step": round(v["calls_per_step"], 2),
             "share_of_tpot": round(v["ms_per_step"] / tpot_ms, 4)} for k, v in ranked[:top]],
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("yaml")
    parser.add_argument("overrides", nargs="*", help="key=value, as benchmark.py takes them")
    parser.add_argument("--out", default="results/profile")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per backend")
    args = parser.parse_args(argv)

    from llmbench.config import ConfigError, load_config

    try:
        cfg = load_config(args.yaml, args.overrides)
        check_profilable(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    from llmbench.models import TORCH_DTYPES, build_model, resolve_device
    from llmbench.results import run_metadata, timestamp
    from llmbench.roofline import measure_peaks
    from llmbench.run import roofline_basis

    device = resolve_device(cfg)
    model, info = build_model(cfg, device)
    measured = measure_peaks(device, TORCH_DTYPES[cfg.compute_dtype]) if cfg.measure_peaks else None
    meta = run_metadata(cfg, device, info, cfg.backend_names[0])
    shape, peaks = roofline_basis(cfg, info, meta["device_name"], measured)  # as the result rows use
    report = {"model_name": info.model_name, "model_dtype": cfg.model_dtype, "timestamp": timestamp(),
              **{k: meta[k] for k in ("device_name", "run_id", "config_hash", "git_commit", "hostname",
                                      "torch_version", "cuda_version", "transformers_version")},
              "backends": [profile_backend(name, model, cfg, device, info, shape, peaks, args.top)
                           for name in cfg.backend_names]}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "decode_profile.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)

    def ms(value):
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"{info.model_name} {cfg.model_dtype} on {report['device_name']}: one decode step")
    for column in ("backend", "batch", "TPOT ms", "device ms", "host ms", "limit ms", "MBU", "device MBU",
                   "top kernel"):
        table.add_column(column)
    for b in report["backends"]:
        tops = b.get("top_kernels") or b.get("top_ops") or [{"name": "-", "ms_per_step": 0}]
        table.add_row(b["backend"], str(b["batch_size"]), ms(b["tpot_ms"]), ms(b["device_ms_per_step"]),
                      ms(b["host_ms_per_step"]), ms(b["tpot_limit_ms"]),
                      "-" if b["mbu"] is None else f"{b['mbu']:.1%}",
                      "-" if b["device_mbu"] is None else f"{b['device_mbu']:.1%}",
                      f"{tops[0]['name'][:48]} {tops[0]['ms_per_step']:.3f} ms")
    Console(width=200).print(table)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
