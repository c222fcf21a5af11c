"""DeepSpeed inference, really run on the CPU: tp_size 1 in this process, tp_size 2 over two spawned
processes, and the real ``deepspeed`` launcher in a subprocess. Kernel injection and CUDA graphs
are CUDA-only: their tests skip without a GPU."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from llmbench.config import ConfigError, check_environment, load_config
from llmbench.distributed import LaunchEnv, check_deepspeed, read_launch_env

TINY_TP = os.path.join(ROOT, "yamls", "tiny_tp.yaml")
LLAMA_TINY = ["model.name=hf_causal_lm", "model.pretrained_model_name_or_path=" + os.path.join(ROOT, "configs", "llama-7b"),
              "model.config_overrides={num_hidden_layers: 2, hidden_size: 128, intermediate_size: 256, "
              "num_attention_heads: 4, num_key_value_heads: 4, vocab_size: 1024}"]
ONE_CELL = ["batch_sizes=[2]", "input_lengths=[8]", "output_lengths=[4]", "num_batches=1", "num_warmup_batches=0"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed kernels and CUDA graphs need CUDA")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- configuration: every mistake stops the run before a model is built ---

@pytest.mark.parametrize("overrides, match", [
    (["deepspeed.replace_with_kernel_inject=true"], r"replace_with_kernel_inject=True.*CUDA-only"),
    (["deepspeed.enable_cuda_graph=true"], r"enable_cuda_graph=True.*generate never calls"),
    (["device=null", "deepspeed.enable_cuda_graph=true"], r"enable_cuda_graph=True.*generate never calls"),
    (["deepspeed.tp_size=0"], r"deepspeed.tp_size=0.*positive"),
    (["use_deepspeed=false", "deepspeed.tp_size=2"], r"deepspeed.tp_size=2.*use_deepspeed"),
    (["backend=hf_compiled", "num_warmup_batches=2"], r"backend='hf_compiled'.*hf_generate"),
    (["isolation=process"], r"isolation='process'.*DeepSpeed"),
])
def test_bad_deepspeed_config(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(TINY_TP, overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides, env, match", [
    (["deepspeed.tp_size=2"], LaunchEnv(0, 0, 1, 1), r"tp_size=2.*world size \(1\)"),
    (["deepspeed.tp_size=3"], LaunchEnv(0, 0, 3, 3), r"tp_size=3.*divide model.n_heads=4"),
    (["device=null", "deepspeed.replace_with_kernel_inject=true"], LaunchEnv(0, 0, 1, 1), r"kernel"),
    (LLAMA_TINY + ["deepspeed.tp_size=8"], LaunchEnv(0, 0, 8, 8), r"divide num_attention_heads"),
])
def test_deepspeed_checks_against_the_launch(overrides, env, match):
    cfg = load_config(TINY_TP, overrides)
    with pytest.raises(ConfigError, match=match):
        check_deepspeed(cfg, env)


def test_tp_size_defaults_to_world_size_and_cli_exits_2():
    plan = check_deepspeed(load_config(TINY_TP), LaunchEnv(1, 1, 2, 2))
    assert plan.tp_size == 2 and plan.kernel_inject is False
    assert read_launch_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == \
        LaunchEnv(1, 1, 2, 2)  # torchrun names it LOCAL_WORLD_SIZE
    from conftest import run_cli

    proc = run_cli(TINY_TP, "deepspeed.replace_with_kernel_inject=true", timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: deepspeed.replace_with_kernel_inject")
    with pytest.raises(ConfigError, match="world size"):
        check_environment(load_config(TINY_TP, ["deepspeed.tp_size=2"]))


# --- tp_size 1, one process: tokens equal to plain HF, for MPT and a Llama-shaped model ---

def plain_tokens(cfg):
    """The gate prompt's greedy tokens from the plain HF model (no DeepSpeed)."""
    from llmbench.distributed import greedy_outputs
    from llmbench.models import build_model

    model, _ = build_model(cfg, torch.device("cpu"))
    return greedy_outputs(model, cfg, torch.device("cpu"))["tokens"]


@pytest.mark.parametrize("model_overrides", [[], LLAMA_TINY], ids=["mpt", "llama"])
def test_tp1_tokens_equal_plain_hf(model_overrides, tmp_path, monkeypatch):
    from llmbench.distributed import greedy_outputs
    from llmbench.run import run_benchmark

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(TINY_TP, [f"results_dir={tmp_path}", *ONE_CELL, *model_overrides])
    expected = plain_tokens(cfg)
    from llmbench.distributed import DeepSpeedRun
    from llmbench.models import build_model

    ds_run = DeepSpeedRun(cfg, torch.device("cpu"))
    engine = ds_run.wrap(build_model(cfg, ds_run.build_device)[0])
    assert torch.equal(greedy_outputs(engine, cfg, ds_run.device)["tokens"], expected)
    assert ds_run.outputs_match is True and "exact" in ds_run.outputs_compared
    run_benchmark(cfg)
    rows = [json.loads(line) for line in (tmp_path / "tiny-mpt-cpu-tp.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["generated_tokens"] == 8
    assert rows[0]["backend"] == "deepspeed" and rows[0]["tp_size"] == 1 and rows[0]["world_size"] == 1
    assert rows[0]["kernel_inject"] is False and rows[0]["outputs_match"] is True


# --- tp_size 2 over two processes, fp32: sharded, same tokens on every rank, rank 0 writes ---

def _tp2_worker(rank, port, results_dir, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    from llmbench.distributed import DeepSpeedRun, greedy_outputs
    from llmbench.models import build_model
    from llmbench.run import run_benchmark

    cfg = load_config(TINY_TP, [f"results_dir={results_dir}", *ONE_CELL])
    expected = plain_tokens(cfg)  # the unsharded model, built from the same seed on this rank
    run_benchmark(cfg)  # the whole path: every rank runs the sweep, rank 0 writes
    ds_run = DeepSpeedRun(cfg, torch.device("cpu"))
    model, info = build_model(cfg, ds_run.build_device)
    engine = ds_run.wrap(model)
    wqkv = engine.module.transformer.blocks[0].attn.Wqkv.weight
    result = {"tokens_equal": torch.equal(greedy_outputs(engine, cfg, ds_run.device)["tokens"], expected),
              "tokens": expected.tolist(), "wqkv_rows": wqkv.shape[0], "full_wqkv_rows": 3 * cfg.model.d_model,
              "params": ds_run.num_params_per_rank, "full_params": info.num_params,
              "outputs_match": ds_run.outputs_match}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def test_tp2_two_processes_sharded_and_exact(tmp_path):
    results_dir, out_dir = tmp_path / "results", tmp_path / "ranks"
    out_dir.mkdir()
    torch.multiprocessing.spawn(_tp2_worker, args=(free_port(), str(results_dir), str(out_dir)), nprocs=2)
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    for result in ranks:
        assert result["tokens_equal"] and result["outputs_match"] is True
        assert result["wqkv_rows"] == result["full_wqkv_rows"] // 2  # MPT's fused QKV is split too
        assert result["params"] < result["full_params"]
    assert ranks[0]["tokens"] == ranks[1]["tokens"]  # identical inputs and outputs on every rank
    assert sorted(p.name for p in results_dir.glob("*.jsonl")) == ["tiny-mpt-cpu-tp.jsonl"]
    rows = [json.loads(line) for line in (results_dir / "tiny-mpt-cpu-tp.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # one row per cell: only rank 0 wrote
    assert rows[0]["tp_size"] == 2 and rows[0]["world_size"] == 2 and rows[0]["outputs_match"] is True


# --- the real launcher, as a user runs it ---

def test_deepspeed_launcher_two_processes(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([os.path.join(bin_dir, "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
                           "benchmark.py", TINY_TP, f"results_dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "tiny-mpt-cpu-tp.jsonl").read_text().splitlines()]
    assert len(rows) == 2  # tiny_tp.yaml's 2 cells, written once (rank 0)
    for row in rows:
        assert row["status"] == "ok" and row["generated_tokens"] == row["batch_size"] * row["output_length"]
        assert row["backend"] == "deepspeed" and row["tp_size"] == 2 and row["world_size"] == 2
        assert row["kernel_inject"] is False and row["outputs_match"] is True
    assert proc.stdout.count("tokens/s") == 1  # one table, from rank 0


# --- CUDA-only paths ---

def test_kernel_injection_is_refused_where_it_cannot_run(monkeypatch):
    """DeepSpeed 0.19.8 + transformers 5: an explicit true is a one-line error, null means false."""
    from llmbench import distributed

    cfg = load_config(TINY_TP, ["device=cuda", *LLAMA_TINY, "deepspeed.replace_with_kernel_inject=null"])
    explicit = load_config(TINY_TP, ["device=cuda", *LLAMA_TINY, "deepspeed.replace_with_kernel_inject=true"])
    versions = {"deepspeed": "0.19.8", "transformers": "5.24.0"}
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr("importlib.metadata.version", lambda name: versions.get(name) or real_version(name))
    assert "transformers 5.24.0" in distributed.kernel_injection_blocker()
    assert check_deepspeed(cfg, LaunchEnv(0, 0, 1, 1)).kernel_inject is False
    with pytest.raises(ConfigError, match=r"replace_with_kernel_inject=True is invalid: DeepSpeed 0.19.8.*false"):
        check_deepspeed(explicit, LaunchEnv(0, 0, 1, 1))
    for deepspeed, transformers in (("0.20.0", "5.24.0"), ("0.19.8", "4.57.1")):  # not known to be broken
        versions.update(deepspeed=deepspeed, transformers=transformers)
        assert distributed.kernel_injection_blocker() is None
        assert check_deepspeed(cfg, LaunchEnv(0, 0, 1, 1)).kernel_inject is True


@pytest.mark.gpu
@needs_cuda
def test_kernel_injection_on_cuda(tmp_path, monkeypatch):
    """Where the installed DeepSpeed and transformers can run it: a Llama shape through DeepSpeed's
    injected kernels, its outputs checked against the plain model's."""
    from llmbench.distributed import kernel_injection_blocker

    if kernel_injection_blocker():
        pytest.skip(f"kernel injection refused on this stack: {kernel_injection_blocker()}")
    from llmbench.run import run_benchmark

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(TINY_TP, [f"results_dir={tmp_path}", "device=cuda", "model_dtype=fp16", *ONE_CELL,
                                *LLAMA_TINY, "deepspeed.replace_with_kernel_inject=true"])
    run_benchmark(cfg)
    row = json.loads((tmp_path / "tiny-mpt-cpu-tp.jsonl").read_text().splitlines()[0])
    assert row["status"] == "ok" and row["outputs_match"] is True and row["kernel_inject"] is True


@pytest.mark.parametrize("given, expected", [
    ("9.0a", "9.0"), ("8.0;9.0a", "8.0;9.0"), ("9.0 9.0a+PTX", "9.0;9.0+PTX"), ("8.6+PTX", "8.6+PTX"),
    ("10.0f;9.0a", "10.0;9.0"),
])
def test_arch_list_is_parseable_by_deepspeed(given, expected):
    """Hopper images set TORCH_CUDA_ARCH_LIST=9.0a, which DeepSpeed 0.19.8's JIT builder cannot parse."""
    from llmbench.distributed import arch_list_for_deepspeed

    fixed = arch_list_for_deepspeed(given)
    assert fixed == expected
    for entry in fixed.split(";"):  # what DeepSpeed does with each entry
        tuple(int(part.split("+")[0]) for part in entry.split("."))
