"""The command line, in a subprocess: bad input exits 2 with one line; the tiny example runs end to end."""
import json
import os

import pytest

from conftest import ROOT, run_cli

TINY = os.path.join(ROOT, "yamls", "tiny.yaml")


@pytest.mark.parametrize("args, fragment", [
    ([TINY, "model.n_head=3"], "model.n_head"),
    ([TINY, "model_dtype=fp64"], "model_dtype='fp64'"),
    ([TINY, "batch_sizes=[0]"], "batch_sizes=[0]"),
    ([TINY, "device=cuda"], "device='cuda'"),
    ([os.path.join(ROOT, "yamls", "nope.yaml")], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(args, fragment, tmp_path):
    proc = run_cli(*args, f"results_dir={tmp_path}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not any(p.suffix == ".jsonl" for p in tmp_path.iterdir())  # nothing ran


def test_tiny_example_end_to_end(tmp_path):
    proc = run_cli(TINY, f"results_dir={tmp_path}", "num_batches=3", "num_warmup_batches=1",
                   "--local_rank=0")  # launchers add --local_rank: it must be accepted
    assert proc.returncode == 0, proc.stderr + proc.stdout
    jsonl = tmp_path / "tiny-mpt-cpu.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 8  # 2 batch sizes x 2 input lengths x 2 output lengths
    assert {(r["batch_size"], r["input_length"], r["output_length"]) for r in rows} == {
        (b, i, o) for b in (1, 4) for i in (32, 128) for o in (8, 32)}
    for row in rows:
        assert row["status"] == "ok"
        assert row["generated_tokens"] == row["batch_size"] * row["output_length"]
        assert row["ttft_ms"] > 0 and row["tpot_ms"] > 0 and row["latency_s"] > 0
        assert len(row["latency_s_samples"]) == 3 and row["use_cache"] is True
        for key in ("run_id", "timestamp", "torch_version", "transformers_version", "python_version",
                    "device_name", "config_hash", "num_params", "backend", "dtype", "peak_memory_gib"):
            assert row[key] is not None, key
        # TTFT + TPOT * (N - 1) accounts for the measured latency within 5%, sample by sample.
        n = row["output_length"]
        for lat, ttft, tpot in zip(row["latency_s_samples"], row["ttft_ms_samples"], row["tpot_ms_samples"]):
            assert (ttft + tpot * (n - 1)) / 1000 == pytest.approx(lat, rel=0.05)
    assert len({r["run_id"] for r in rows}) == 1
    assert (tmp_path / "tiny-mpt-cpu.csv").read_text().count("\n") == 9
    assert (tmp_path / f"tiny-mpt-cpu.config-{rows[0]['config_hash']}.yaml").exists()
    assert "tokens/s" in proc.stdout and "TTFT" in proc.stdout
