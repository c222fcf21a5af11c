"""benchmarks/decode_profile.py: the per-step arithmetic, and a CPU run end to end."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_per_step_subtracts_the_prefill_call():
    from decode_profile import per_step

    long_call = {"gemv": {"us": 9_000.0, "count": 100.0}, "softmax": {"us": 400.0, "count": 20.0},
                 "prefill_gemm": {"us": 500.0, "count": 4.0}}
    prefill = {"gemv": {"us": 1_000.0, "count": 4.0}, "prefill_gemm": {"us": 500.0, "count": 4.0}}
    steps = per_step(long_call, prefill, steps=8)
    assert steps["gemv"] == {"ms_per_step": 1.0, "calls_per_step": 12.0}  # (9000-1000) µs / 8 steps
    assert steps["softmax"] == {"ms_per_step": 0.05, "calls_per_step": 2.5}
    assert "prefill_gemm" not in steps  # the same in both calls: not decode work


def test_profile_runs_on_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "decode_profile.py"), os.path.join(ROOT, "yamls", "tiny.yaml"),
         "batch_sizes=[2]", "input_lengths=[16]", "output_lengths=[1,6]", "--out", str(tmp_path), "--top", "5"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "decode_profile.json").read_text())
    (row,) = report["backends"]
    assert (row["backend"], row["batch_size"], row["input_length"], row["output_length"]) == ("hf_generate", 2, 16, 6)
    assert row["tpot_ms"] > 0 and 0 < row["mbu"] < 1
    assert row["device_ms_per_step"] is None and row["host_ms_per_step"] is None  # no CUPTI on a CPU
    assert row["distinct_ops"] >= len(row["top_ops"]) and row["calls_per_step"] > 0
    assert row["ms_per_step_outside_top"] >= 0
    assert report["torch_version"] and report["config_hash"] and report["timestamp"]
    ops = row["top_ops"]
    assert 0 < len(ops) <= 5 and all(op["ms_per_step"] > 0 for op in ops)
    assert any(op["name"] == "aten::mm" or op["name"] == "aten::addmm" for op in ops)
    assert "one decode step" in proc.stdout


@pytest.mark.parametrize("yaml, override, key", [
    ("tiny.yaml", "batch_sizes=[0]", "batch_sizes"),
    ("tiny.yaml", "batch_sizes=auto", "batch_sizes='auto'"),
    ("tiny.yaml", "output_lengths=[1]", "output_lengths=[1]"),
    ("tiny_tp.yaml", "use_deepspeed=true", "use_deepspeed=True"),
])
def test_profile_bad_input_exits_2_before_building(tmp_path, yaml, override, key):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "decode_profile.py"),
                           os.path.join(ROOT, "yamls", yaml), override, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and key in proc.stderr, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "decode_profile.json").exists()


def test_kernel_table_takes_cuda_kernels_only():
    """CUDA: only kernel events count (no CPU ops, no GPU annotation spans over other kernels)."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from decode_profile import kernel_times_us

    def event(key, device_type, cpu_us, device_us, count=1, annotation=False):
        return SimpleNamespace(key=key, device_type=device_type, self_cpu_time_total=cpu_us,
                               self_device_time_total=device_us, count=count, is_user_annotation=annotation)

    profile = SimpleNamespace(key_averages=lambda: [
        event("gemv", DeviceType.CUDA, 0, 900.0, count=3),
        event("aten::mm", DeviceType.CPU, 50.0, 900.0),  # launches gemv: its device time is the kernel's
        event("CompiledGraph", DeviceType.CUDA, 0, 1000.0, annotation=True),
        event("memset", DeviceType.CUDA, 0, 0.0),
    ])
    assert kernel_times_us(profile, "cuda") == {"gemv": {"us": 900.0, "count": 3.0}}
    assert kernel_times_us(profile, "cpu") == {"aten::mm": {"us": 50.0, "count": 1.0}}
