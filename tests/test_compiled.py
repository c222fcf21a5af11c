"""The hf_compiled backend: MPT's compile-friendly attention is output-identical, the correctness
gate runs, and compilation stays out of the samples."""
import json
import os

import pytest
import torch

from conftest import ROOT, run_cli
from llmbench.sweep import make_inputs


def test_patched_mpt_attention_is_output_identical(tiny_cfg):
    from llmbench.backends import HFGenerateBackend
    from llmbench.models import build_model
    from llmbench.patches import patch_mpt_attention, unpatch_mpt_attention

    cfg = tiny_cfg()
    model, info = build_model(cfg, torch.device("cpu"))
    ids, mask = make_inputs(3, 3, 40, info.vocab_size, torch.device("cpu"))
    with torch.inference_mode():
        reference = model(input_ids=ids, attention_mask=mask).logits
        expected = HFGenerateBackend(model, cfg, torch.device("cpu")).generate(ids, mask, 12)
        assert patch_mpt_attention(model) == cfg.model.n_layers
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, reference)
        assert torch.equal(HFGenerateBackend(model, cfg, torch.device("cpu")).generate(ids, mask, 12), expected)
    unpatch_mpt_attention(model)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_patched_mpt_decode_has_no_graph_break(tiny_cfg):
    from transformers import StaticCache

    from llmbench.models import build_model
    from llmbench.patches import patch_mpt_attention

    model, info = build_model(tiny_cfg(), torch.device("cpu"))
    patch_mpt_attention(model)
    cache = StaticCache(config=model.config, max_cache_len=24)
    ids, _ = make_inputs(1, 1, 16, info.vocab_size, torch.device("cpu"))
    with torch.inference_mode():
        model(input_ids=ids, cache=cache, use_cache=True)
        explanation = torch._dynamo.explain(model)(input_ids=ids[:, :1], cache=cache, use_cache=True)
    assert explanation.graph_break_count == 0


def test_compiled_backend_end_to_end(tmp_path):
    """One cell through torch.compile on CPU (the cold compile takes tens of seconds)."""
    proc = run_cli(os.path.join(ROOT, "yamls", "tiny.yaml"), f"results_dir={tmp_path}",
                   "backends=[hf_generate,hf_compiled,static_loop]", "batch_sizes=[2]", "input_lengths=[16]",
                   "output_lengths=[6]", "num_batches=2", "num_warmup_batches=2", timeout=400)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "tiny-mpt-cpu.jsonl").read_text().splitlines()]
    assert [r["backend"] for r in rows] == ["hf_generate", "hf_compiled", "static_loop"]
    eager, compiled, loop = rows
    assert loop["outputs_match"] is True and loop["generated_tokens"] == 12 and loop["tpot_ms"] > 0
    assert len(loop["tpot_ms_samples"]) == 2 and loop["gate_first_call_s"] > 2 * loop["latency_s_median"]
    assert "outputs_match" not in eager  # eager is the reference
    assert compiled["outputs_match"] is True and "greedy tokens" in compiled["outputs_compared"]
    assert compiled["first_mismatch_token"] is None and loop["first_mismatch_token"] is None
    assert compiled["status"] == "ok" and compiled["generated_tokens"] == 12
    # Compilation happened in the gate call, reported apart, far slower than the kept samples.
    assert compiled["gate_first_call_s"] > 2 * compiled["latency_s_median"]
    assert len(compiled["warmup_s_samples"]) == 2 and len(compiled["latency_s_samples"]) == 2
    # Each compiled decode step was one graph; CUDA graphs do not exist on a CPU (null, not 0).
    assert compiled["graph_breaks"] == 0 and loop["graph_breaks"] == 0
    assert loop["compiled_graphs"] == 1  # static_loop: one decode-step graph for the one shape
    assert compiled["compiled_graphs"] >= 1
    assert compiled["cudagraph_skips"] is None and loop["cudagraph_skips"] is None
    assert eager["graph_breaks"] is None  # eager compiles nothing


def test_token_clock_marks_without_the_host_seeing_tokens():
    """The decode-loop clock: start, one mark per token, resolve (CPU: the marks are the times)."""
    from llmbench.timing import TokenClock

    clock = TokenClock()
    clock.start(torch.device("cpu"))
    for _ in range(3):
        clock.mark()
    clock.resolve()
    assert len(clock.token_times) == 3 and clock.token_times == sorted(clock.token_times)


def test_static_loop_matches_eager_in_process(tiny_cfg):
    from llmbench.backends import HFGenerateBackend, build_backend
    from llmbench.models import build_model
    from llmbench.timing import TokenClock

    cfg = tiny_cfg("backend=static_loop", "num_warmup_batches=2")
    model, info = build_model(cfg, torch.device("cpu"))
    ids, mask = make_inputs(5, 3, 20, info.vocab_size, torch.device("cpu"))
    expected = HFGenerateBackend(model, cfg, torch.device("cpu")).generate(ids, mask, 5)
    backend = build_backend("static_loop", model, cfg, torch.device("cpu"))
    backend.step = backend._decode_step  # the loop itself, without paying for a compile here
    for _ in range(2):  # the second call reuses (and resets) the same static cache
        clock = TokenClock()
        assert torch.equal(backend.generate(ids, mask, 5, streamer=clock), expected)
        assert len(clock.token_times) == 5
    backend.close()


def test_compiled_needs_two_warmups():
    from llmbench.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="num_warmup_batches=1.*hf_compiled"):
        load_config(os.path.join(ROOT, "yamls", "tiny.yaml"), ["backend=hf_compiled", "num_warmup_batches=1"])


def test_compile_stats_count_from_when_the_backend_was_built(tiny_cfg):
    """Breaks and graphs compiled after the backend was built show in its rows; earlier ones do
    not (the counters are process-wide: backends run one after another)."""
    from llmbench.backends import build_backend
    from llmbench.models import build_model

    def breaks_once(x):
        x = x + 1
        torch._dynamo.graph_break()
        return x * 2

    torch.compile(breaks_once, backend="eager")(torch.ones(2))  # before: not this backend's
    cfg = tiny_cfg("backend=static_loop", "num_warmup_batches=2")
    model, _ = build_model(cfg, torch.device("cpu"))
    backend = build_backend("static_loop", model, cfg, torch.device("cpu"))
    assert backend.compile_stats() == {"compiled_graphs": 0, "graph_breaks": 0, "cudagraph_skips": None,
                                       "compile_tuning": False}
    torch._dynamo.reset()
    torch.compile(breaks_once, backend="eager")(torch.ones(3))
    stats = backend.compile_stats()
    assert stats["graph_breaks"] == 1 and stats["compiled_graphs"] == 2  # the two halves around the break
    backend.close()


def test_compile_tuning_is_set_only_while_the_backend_is_prepared(tiny_cfg, monkeypatch):
    import torch._inductor.config as inductor_config

    from llmbench.backends import build_backend
    from llmbench.models import build_model

    cfg = tiny_cfg("backend=static_loop", "num_warmup_batches=2", "compile_tuning=true")
    model, _ = build_model(cfg, torch.device("cpu"))
    assert build_backend("static_loop", model, cfg, torch.device("cpu")).tuning is False  # GPU only
    backend = build_backend("static_loop", model, cfg, torch.device("cpu"))
    backend.close()
    backend.tuning = True  # as on a GPU: the setting flips with prepare/close, and is put back
    before = inductor_config.coordinate_descent_tuning
    backend.prepare()
    assert inductor_config.coordinate_descent_tuning is True
    backend.close()
    assert inductor_config.coordinate_descent_tuning == before


def test_gate_reports_where_tokens_part(tiny_cfg):
    """A backend whose 4th new token of row 1 differs: outputs_match false, first_mismatch_token 3,
    and the rank and gap of its token read from eager generate's own logits at that step."""
    from llmbench.backends import HFGenerateBackend, compare_with_eager, describe_mismatch
    from llmbench.models import build_model

    class OffByOneLater(HFGenerateBackend):
        def generate(self, input_ids, attention_mask, output_length, streamer=None):
            out = super().generate(input_ids, attention_mask, output_length, streamer).clone()
            out[1, input_ids.shape[1] + 3] = (out[1, input_ids.shape[1] + 3] + 1) % self.model.config.vocab_size
            return out

    cfg = tiny_cfg()
    model, info = build_model(cfg, torch.device("cpu"))
    ids, mask = make_inputs(1, 2, 10, info.vocab_size, torch.device("cpu"))
    eager = HFGenerateBackend(model, cfg, torch.device("cpu"))
    with torch.inference_mode():
        expected, logits = eager.generate_with_logits(ids, mask, 6)
        assert torch.equal(expected, eager.generate(ids, mask, 6)) and len(logits) == 6
        assert torch.equal(torch.stack([step.argmax(-1) for step in logits], 1), expected[:, 10:])  # greedy
        fields = compare_with_eager(OffByOneLater(model, cfg, torch.device("cpu")), ids, mask, 6)
        same = compare_with_eager(HFGenerateBackend(model, cfg, torch.device("cpu")), ids, mask, 6)
    altered = (int(expected[1, 13]) + 1) % info.vocab_size
    step_logits = logits[3][1]
    assert fields["outputs_match"] is False and fields["first_mismatch_token"] == 3
    assert fields["mismatch_eager_rank"] == int((step_logits > step_logits[altered]).sum()) + 1 > 1
    assert fields["mismatch_logit_gap"] == pytest.approx(float(step_logits.max() - step_logits[altered]))
    assert fields["mismatch_logit_gap"] > 0
    assert same["outputs_match"] is True and same["first_mismatch_token"] is None
    assert same["mismatch_eager_rank"] is None and same["mismatch_logit_gap"] is None
    # Outputs that differ only in the prompt part have no new token to describe.
    prompt_only = expected.clone()
    prompt_only[0, 0] += 1
    assert describe_mismatch(expected, prompt_only, logits, 10)["first_mismatch_token"] is None


def test_isolated_cells_get_the_gate_and_compile_stats(tmp_path):
    """isolation: process: each child gates its own cell against eager generate."""
    proc = run_cli(os.path.join(ROOT, "yamls", "tiny.yaml"), f"results_dir={tmp_path}", "isolation=process",
                   "backends=[hf_generate,static_loop]", "batch_sizes=[2]", "input_lengths=[16]", "output_lengths=[6]",
                   "num_batches=2", "num_warmup_batches=2", timeout=400)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    eager, loop = [json.loads(line) for line in (tmp_path / "tiny-mpt-cpu.jsonl").read_text().splitlines()]
    assert loop["isolation"] == "process" and loop["outputs_match"] is True and loop["first_mismatch_token"] is None
    assert "batch 2, input 16, output 6" in loop["outputs_compared"]
    assert loop["gate_first_call_s"] > 2 * loop["latency_s_median"]  # the compile happened in the gate call
    assert loop["compiled_graphs"] == 1 and loop["graph_breaks"] == 0
    assert "outputs_match" not in eager and eager["graph_breaks"] is None
    assert eager["energy_j"] is None and loop["energy_j"] is None  # no counter on a CPU: null, not 0
