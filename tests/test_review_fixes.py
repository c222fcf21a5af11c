"""Resume identity, torn lines, and mistakes that must stop a run before it starts."""
import os

import pytest

from conftest import ROOT, run_cli
from llmbench.config import ConfigError, check_environment, load_config, measurement_hash
from llmbench.results import ResultsWriter, load_rows

TINY = os.path.join(ROOT, "yamls", "tiny.yaml")


def test_resume_needs_same_hardware_and_split(tmp_path):
    from llmbench.run import load_prior_rows

    cfg = load_config(TINY)
    path = str(tmp_path / "rows.jsonl")
    writer = ResultsWriter(path)
    base = {"measurement_hash": measurement_hash(cfg), "backend": "deepspeed", "device_name": "A",
            "device_count": 1, "tp_size": 2, "world_size": 2, "input_length": 32, "output_length": 8,
            "status": "ok"}
    writer.write({**base, "batch_size": 1})
    writer.write({**base, "batch_size": 2, "tp_size": 1, "world_size": 1})  # another split
    writer.write({**base, "batch_size": 4, "device_name": "B"})  # other hardware
    identity = {k: base[k] for k in ("backend", "device_name", "device_count", "tp_size", "world_size")}
    assert set(load_prior_rows(path, cfg, identity)) == {(1, 32, 8)}


def test_measurement_hash_ignores_validation_bounds_and_derived_settings():
    same = measurement_hash(load_config(TINY))
    assert same == measurement_hash(load_config(TINY, ["max_seq_len=400", "model.max_seq_len=256"]))
    assert same == measurement_hash(load_config(TINY, ["noise_cv_threshold=0.2", "measure_peaks=false"]))
    assert same != measurement_hash(load_config(TINY, ["model.max_seq_len=400", "max_seq_len=400"]))


def test_torn_last_line_is_cut_before_the_next_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    ResultsWriter(str(path)).write({"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"a": 2, "tor')  # a crash mid-write
    ResultsWriter(str(path)).write({"a": 3})
    assert [r["a"] for r in load_rows(str(path))] == [1, 3]
    assert path.read_text().endswith("\n")


def test_compiled_without_cache_is_refused():
    with pytest.raises(ConfigError, match="use_cache=False.*hf_compiled"):
        load_config(TINY, ["backend=hf_compiled", "use_cache=false"])


def test_bad_config_override_type_and_results_dir(tmp_path):
    cfg = load_config(os.path.join(ROOT, "yamls", "compare-llama-7b.yaml"),
                      ["model.config_overrides={num_hidden_layers: abc}"])
    with pytest.raises(ConfigError, match="config_overrides.num_hidden_layers='abc'"):
        check_environment(cfg)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli(TINY, f"results_dir={blocker}", timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: results_dir=") and "Traceback" not in proc.stderr


def test_hf_model_name_says_when_the_shape_was_overridden():
    from llmbench.models import describe_model

    import torch
    from transformers import AutoModelForCausalLM

    from llmbench.models import build_hf_config

    cfg = load_config(os.path.join(ROOT, "yamls", "compare-falcon-7b.yaml"),
                      ["model.config_overrides={num_hidden_layers: 1}"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_hf_config(cfg.model, cfg.max_seq_len))
    assert describe_model(model, cfg).model_name.startswith("falcon-7b-")


def test_falcon_kv_estimate_uses_its_single_kv_head():
    from llmbench.memory import kv_cache_bytes
    from llmbench.models import build_hf_config

    cfg = load_config(os.path.join(ROOT, "yamls", "compare-falcon-7b.yaml"))
    hf_config = build_hf_config(cfg.model, cfg.max_seq_len)
    # 2 x 32 layers x batch 64 x 3048 positions x 1 KV head x 64 dims x 2 bytes
    assert kv_cache_bytes(hf_config, 64, 3048, 2) == 2 * 32 * 64 * 3048 * 1 * 64 * 2


def test_results_from_before_compile_tuning_still_resume():
    """A key added later is hashed only when set away from its default: the committed CPU backends
    run (measured before compile_tuning existed) keeps its measurement hash."""
    import glob
    import json

    config = glob.glob(os.path.join(ROOT, "results", "cpu", "small-backends-cpu.config-*.yaml"))[0]
    rows = [json.loads(line) for line in open(os.path.join(ROOT, "results", "cpu", "small-backends-cpu.jsonl"))]
    cfg = load_config(config)
    assert {row["measurement_hash"] for row in rows} == {measurement_hash(cfg)}
    assert measurement_hash(load_config(config, ["compile_tuning=true"])) != measurement_hash(cfg)
