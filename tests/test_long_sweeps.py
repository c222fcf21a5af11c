"""Long sweeps never lose a measurement: OOM rows, skipped larger batches, errors, crash safety
(kill -9), resume, Ctrl-C, the largest-batch search, process isolation, the noise guard.

Faults are injected: a patched generate that raises the real exception types, and a real CPU
allocation failure under an address-space limit in a subprocess.
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

import benchmark
from conftest import ROOT
from llmbench.config import load_config, measurement_hash
from llmbench.memory import is_out_of_memory
from llmbench.sweep import Cell, Sweep, find_max_batch, measure_cell

TINY = os.path.join(ROOT, "yamls", "tiny.yaml")
CPU = torch.device("cpu")
CUDA_OOM = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total)")
CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 34359738368 bytes. Error code 12 (Cannot allocate memory)")
# A small, quick grid: 4 batch sizes x 2 input lengths x 1 output length.
SMALL = ["batch_sizes=[1,2,4,8]", "input_lengths=[8,16]", "output_lengths=[2]", "num_batches=1",
         "num_warmup_batches=0"]


def read_rows(path):
    """Every line must be a complete JSON row."""
    with open(path) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def statuses(rows):
    return {(r["batch_size"], r["input_length"], r["output_length"]): r["status"] for r in rows}


# --- the new keys are validated at load time --------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    (["batch_sizes=abc"], r"batch_sizes='abc'.*'auto' or a non-empty list"),
    (["batch_sizes=7"], r"batch_sizes=7.*'auto' or a non-empty list"),
    (["isolation=thread"], r"isolation='thread'.*none.*process"),
    (["min_duration_s=-1"], r"min_duration_s=-1.0"),
    (["max_batch_search.start=0"], r"max_batch_search.start=0.*positive"),
    (["max_batch_search.max=2", "max_batch_search.start=4"], r"max_batch_search.max=2.*>= max_batch_search.start=4"),
    (["max_batch_search.enabled=true"], r"batch_sizes=\[1, 4\].*set batch_sizes=auto"),
    (["resume=maybe"], r"resume"),
])
def test_bad_long_sweep_keys(overrides, match):
    from llmbench.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config(TINY, overrides)


def test_auto_is_the_search_switch():
    for overrides in (["batch_sizes=auto"], ["batch_sizes=[1]", "max_batch_search.enabled=true"]):
        cfg = load_config(TINY, overrides)
        assert cfg.batch_sizes == "auto" and cfg.max_batch_search.enabled


# --- the largest batch that fits -------------------------------------------------------------

@pytest.mark.parametrize("limit, start, cap", [(37, 1, 1024), (1, 1, 1024), (2, 1, 64), (100, 1, 1024),
                                               (37, 3, 1024), (64, 1, 64), (5000, 1, 1024), (0, 1, 8)])
def test_find_max_batch_is_exact_and_logarithmic(limit, start, cap):
    """A fake device where batch > limit runs out of memory: the search finds exactly the limit."""
    def try_batch(batch):
        return "ok" if batch <= limit else "oom"

    found = find_max_batch(try_batch, start, cap)
    assert found.largest == (min(limit, cap) or None)
    tried = [b for b, _ in found.tries]
    assert len(tried) == len(set(tried)) and max(tried) <= cap  # never the same batch twice, never above cap
    # Doubling to the first OOM, then bisecting the last gap: at most 2 * log2(answer) + 2 tries.
    assert len(tried) <= 2 * max(min(limit, cap), 1).bit_length() + 2


def test_find_max_batch_stops_on_error():
    found = find_max_batch(lambda b: "ok" if b < 4 else "error", 1, 64)
    assert found.largest == 2 and found.stopped_by == "error" and found.tries[-1] == (4, "error")


def test_auto_batch_sizes_sweep_against_fake_memory_limit(tiny_cfg):
    """batch_sizes=auto with a fake measure whose memory limit is a known batch per input length."""
    limits = {8: 13, 16: 6}
    calls = []

    def measure(cell):
        calls.append(cell)
        if cell.batch_size > limits[cell.input_length]:
            raise CUDA_OOM
        return {"batch_size": cell.batch_size, "input_length": cell.input_length,
                "output_length": cell.output_length}

    rows = []
    sweep = Sweep(tiny_cfg("batch_sizes=auto", "input_lengths=[8,16]", "output_lengths=[2]",
                           "max_batch_search.max=256"), measure, rows.append, CPU)
    sweep.run()
    assert {k: v.largest for k, v in sweep.max_batch.items()} == {(8, 2): 13, (16, 2): 6}
    assert len(calls) == len(rows) <= 2 * (2 * 4 + 2)  # every try is a row; logarithmic
    assert all(r["status"] == ("ok" if r["batch_size"] <= limits[r["input_length"]] else "oom") for r in rows)
    assert [r["batch_size"] for r in rows if r["input_length"] == 8][:5] == [1, 2, 4, 8, 16]  # grows, then bisects


# --- OOM is data: injected failures in the real sweep, exit status of the CLI -----------------

def patch_generate(monkeypatch, fail):
    """Patch the real backend's generate: ``fail(batch, input_length)`` returns an exception or None."""
    from llmbench.backends import HFGenerateBackend

    original = HFGenerateBackend.generate

    def generate(self, input_ids, attention_mask, output_length, streamer=None):
        err = fail(*input_ids.shape)
        if err is not None:
            raise err
        return original(self, input_ids, attention_mask, output_length, streamer=streamer)

    monkeypatch.setattr(HFGenerateBackend, "generate", generate)


@pytest.mark.parametrize("oom", [CUDA_OOM, CPU_OOM], ids=["cuda_oom", "cpu_alloc"])
def test_injected_oom_row_then_larger_batches_skipped(monkeypatch, tmp_path, capsys, oom):
    patch_generate(monkeypatch, lambda batch, length: oom if (batch >= 4 and length == 16) else None)
    assert benchmark.main([TINY, f"results_dir={tmp_path}", *SMALL]) == 0  # oom and skipped are not errors
    rows = read_rows(tmp_path / "tiny-mpt-cpu.jsonl")
    expected = {(b, i, 2): "ok" for b in (1, 2, 4, 8) for i in (8, 16)}
    expected.update({(4, 16, 2): "oom", (8, 16, 2): "skipped"})
    assert statuses(rows) == expected and len(rows) == 8
    by_key = {(r["batch_size"], r["input_length"]): r for r in rows}
    assert type(oom).__name__ in by_key[4, 16]["error"]
    assert "batch 4 ran out of memory" in by_key[8, 16]["reason"]
    assert (tmp_path / "tiny-mpt-cpu.csv").read_text().count("\n") == 9
    assert "oom" in capsys.readouterr().out


def test_oom_without_skipping_and_errors_exit_1(monkeypatch, tmp_path):
    def fail(batch, length):
        if batch >= 4 and length == 16:
            return CPU_OOM
        if batch == 2 and length == 8:
            return ValueError("something else broke")
        return None

    patch_generate(monkeypatch, fail)
    code = benchmark.main([TINY, f"results_dir={tmp_path}", "skip_larger_after_oom=false", *SMALL])
    assert code == 1  # a cell errored: the sweep finished, the exit status says so
    rows = read_rows(tmp_path / "tiny-mpt-cpu.jsonl")
    expected = {(b, i, 2): "ok" for b in (1, 2, 4, 8) for i in (8, 16)}
    expected.update({(4, 16, 2): "oom", (8, 16, 2): "oom", (2, 8, 2): "error"})
    assert statuses(rows) == expected
    assert [r["error"] for r in rows if r["status"] == "error"] == ["ValueError: something else broke"]


def test_oom_classification():
    assert is_out_of_memory(CUDA_OOM) and is_out_of_memory(CPU_OOM) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("x"))


def test_estimate_skips_only_after_a_real_try_at_the_boundary(tiny_cfg):
    """The estimate says batch >= 4 cannot fit: batch 4 is still tried; 8 is then skipped, saying why."""
    def estimate(cell):
        return "memory estimate: too big" if cell.batch_size >= 4 else None

    def run(fits_up_to, *overrides):
        def measure(cell):
            if cell.batch_size > fits_up_to:
                raise CPU_OOM
            return {"batch_size": cell.batch_size, "input_length": 8, "output_length": 2}
        rows = []
        Sweep(tiny_cfg("batch_sizes=[1,4,8,16]", "input_lengths=[8]", "output_lengths=[2]", *overrides),
              measure, rows.append, CPU, estimate=estimate).run()
        return [(r["batch_size"], r["status"], r.get("reason", "")) for r in rows]

    assert run(2, "skip_larger_after_oom=false") == [
        (1, "ok", ""), (4, "oom", ""), (8, "skipped", "memory estimate: too big"),
        (16, "skipped", "memory estimate: too big")]
    # The estimate was wrong (batch 4 ran): it is not trusted for this length pair any more.
    assert [s for _, s, _ in run(8)] == ["ok", "ok", "ok", "oom"]


def test_memory_estimate_of_a_cell_that_cannot_fit(tiny_cfg):
    from llmbench.models import build_hf_config
    from llmbench.run import make_estimate

    cfg = tiny_cfg()
    estimate = make_estimate(cfg, CPU, build_hf_config(cfg.model, cfg.max_seq_len))
    assert estimate(Cell(1, 32, 8)) is None
    # 2 (K, V) x 2 layers x 10^7 x 160 positions x 128 x 4 bytes = 3 TiB of KV cache.
    assert "the KV cache alone needs" in estimate(Cell(10_000_000, 128, 32))


# --- noise guard and resume bookkeeping --------------------------------------------------------

def test_min_duration_keeps_timing(tiny_cfg):
    from test_measure import FakeBackend

    cfg = tiny_cfg("num_batches=1", "num_warmup_batches=0", "min_duration_s=0.2")
    row = measure_cell(FakeBackend(prefill_s=0.02, step_s=0.01), Cell(1, 4, 2), cfg, 100, CPU)
    samples = row["latency_s_samples"]  # ~0.03 s a call: several calls, and not one more than needed
    assert row["num_samples"] == len(samples) >= 2 and sum(samples[:-1]) < 0.2 <= sum(samples)


def test_resume_reuses_only_rows_of_the_same_measurement(tiny_cfg, tmp_path):
    from llmbench.results import ResultsWriter
    from llmbench.run import load_prior_rows

    cfg = tiny_cfg()
    path = str(tmp_path / "rows.jsonl")
    writer = ResultsWriter(path)
    same, other = measurement_hash(cfg), measurement_hash(tiny_cfg("num_batches=3"))
    assert same == measurement_hash(tiny_cfg("batch_sizes=[1,2,64]", "resume=true"))  # the grid is not in it
    for h, b, status in [(same, 1, "error"), (same, 1, "ok"), (same, 4, "oom"), (other, 2, "ok"),
                         (same, 8, "skipped")]:
        writer.write({"measurement_hash": h, "backend": "hf_generate", "batch_size": b, "input_length": 32,
                      "output_length": 8, "status": status})
    writer.write({"measurement_hash": same, "backend": "hf_compiled", "batch_size": 2, "input_length": 32,
                  "output_length": 8, "status": "ok"})  # another backend's row never stands in
    prior = load_prior_rows(path, cfg, {"backend": "hf_generate"})
    assert {k: r["status"] for k, r in prior.items()} == {(1, 32, 8): "ok", (4, 32, 8): "oom",
                                                          (8, 32, 8): "skipped"}


# --- subprocesses: a real allocation failure, kill -9 + resume, Ctrl-C, isolation -------------

def limit_address_space():
    """A hard address-space limit: big allocations fail in the allocator instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (8_000_000_000, 8_000_000_000))


def start_cli(*args, limited=False):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "benchmark.py"), TINY, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=limit_address_space if limited else None)


# A cell that cannot fit under 8 GB of address space: MPT's eager attention materialises
# batch x heads x input^2 fp32 scores (512 x 4 x 2048^2 x 4 B = 32 GiB) in the prefill.
REAL_OOM = ["max_seq_len=2056", "batch_sizes=[1,512,1024]", "input_lengths=[2048]", "output_lengths=[2]",
            "num_batches=1", "num_warmup_batches=0"]


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_real_allocation_failure_under_address_space_limit(tmp_path, isolation):
    proc = start_cli(f"results_dir={tmp_path}", f"isolation={isolation}", *REAL_OOM, limited=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    rows = read_rows(tmp_path / "tiny-mpt-cpu.jsonl")
    assert statuses(rows) == {(1, 2048, 2): "ok", (512, 2048, 2): "oom", (1024, 2048, 2): "skipped"}, out
    assert "can't allocate memory" in rows[1]["error"]
    if isolation == "process":
        assert rows[0]["isolation"] == "process" and rows[0]["model_build_s"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_oom_then_smaller_cell_runs(tmp_path):
    """Batch 4096 x input 2048 needs 256 GiB of attention scores: a real CUDA OOM; memory is
    released, so the batch-1 cell after it runs, and the allocator is back where it started."""
    from llmbench.run import run_benchmark

    cfg = load_config(TINY, [f"results_dir={tmp_path}", "device=cuda", "max_seq_len=2056",
                             "batch_sizes=[4096,1]", "input_lengths=[2048]", "output_lengths=[2]",
                             "num_batches=1", "num_warmup_batches=0"])
    rows = run_benchmark(cfg)
    assert [r["status"] for r in rows] == ["oom", "ok"]
    assert "OutOfMemoryError" in rows[0]["error"]
    assert torch.cuda.memory_reserved() < 2 * 1024 ** 3


def wait_for_rows(path, count, proc, timeout=240):
    """Poll the results file until it has ``count`` lines (the sweep is then mid-way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if os.path.exists(path) and len(open(path).read().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {count} rows after {timeout} s")


# 8 cells of at least 0.3 s of timed calls each, so a signal lands mid-sweep.
SLOW = ["batch_sizes=[1,2]", "input_lengths=[8,16]", "output_lengths=[2,4]", "num_batches=1",
        "num_warmup_batches=0", "min_duration_s=0.3"]


def test_kill_9_then_resume_completes_without_duplicates(tmp_path):
    path = tmp_path / "tiny-mpt-cpu.jsonl"
    proc = start_cli(f"results_dir={tmp_path}", *SLOW)
    wait_for_rows(path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    first = read_rows(path)  # every line parses: no torn row
    k = len(first)
    assert 2 <= k < 8 and all(r["status"] == "ok" for r in first)

    proc = start_cli(f"results_dir={tmp_path}", "resume=true", *SLOW)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"{k} of 8 cells already measured" in out
    rows = read_rows(path)
    assert rows[:k] == first  # untouched
    keys = [(r["batch_size"], r["input_length"], r["output_length"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8  # every cell once: no duplicates, no re-measurement
    assert len({r["run_id"] for r in rows[k:]}) == 1 and rows[k]["run_id"] != first[0]["run_id"]
    assert (tmp_path / "tiny-mpt-cpu.csv").read_text().count("\n") == 9


def test_ctrl_c_keeps_rows_prints_table_exits_130(tmp_path):
    path = tmp_path / "tiny-mpt-cpu.jsonl"
    proc = start_cli(f"results_dir={tmp_path}", *SLOW)
    wait_for_rows(path, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    rows = read_rows(path)
    assert 1 <= len(rows) < 8 and all(r["status"] == "ok" for r in rows)
    assert "interrupted" in out and "TTFT ms" in out and "Traceback" not in out
    assert (tmp_path / "tiny-mpt-cpu.csv").read_text().count("\n") == len(rows) + 1
