"""The measurement itself: inputs, token counting, timing against a fake model of known duration,
statistics, and the KV cache really being on."""
import time

import pytest
import torch

from llmbench.sweep import Cell, TokenCountError, make_inputs, measure_cell, run_sweep
from llmbench.timing import percentile, summarize

CPU = torch.device("cpu")


class FakeBackend:
    """Sleeps a known prefill time, then a known time per decode step, calling the streamer like HF."""

    name = "fake"

    def __init__(self, prefill_s=0.03, step_s=0.01, drop_tokens=0):
        self.prefill_s, self.step_s, self.drop_tokens = prefill_s, step_s, drop_tokens
        self.calls = 0

    def generate(self, input_ids, attention_mask, output_length, streamer=None):
        self.calls += 1
        streamer.put(input_ids)
        time.sleep(self.prefill_s)
        streamer.put(input_ids[:, :1])
        for _ in range(output_length - 1):
            time.sleep(self.step_s)
            streamer.put(input_ids[:, :1])
        new = torch.zeros(input_ids.shape[0], output_length - self.drop_tokens, dtype=input_ids.dtype)
        return torch.cat([input_ids, new], dim=1)


def test_inputs_are_seeded_and_shaped():
    a, mask = make_inputs(17, 4, 32, 1000, CPU)
    b, _ = make_inputs(17, 4, 32, 1000, CPU)
    c, _ = make_inputs(18, 4, 32, 1000, CPU)
    assert a.shape == (4, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert mask.shape == a.shape and bool((mask == 1).all())
    assert int(a.min()) >= 0 and int(a.max()) < 1000


def test_fake_model_timing_is_recovered(tiny_cfg):
    cfg = tiny_cfg("num_batches=3", "num_warmup_batches=2")
    backend = FakeBackend(prefill_s=0.03, step_s=0.01)
    row = measure_cell(backend, Cell(2, 16, 6), cfg, 100, CPU)
    assert backend.calls == 5  # 2 warm-up + 3 timed
    assert row["num_samples"] == 3 and len(row["latency_s_samples"]) == 3 and len(row["warmup_s_samples"]) == 2
    # sleep() never returns early and rarely overshoots by much: known durations come back.
    assert 30 <= row["ttft_ms"] < 45
    assert 10 <= row["tpot_ms"] < 15
    expected_latency = 0.03 + 5 * 0.01
    assert expected_latency <= row["latency_s"] < expected_latency * 1.3
    assert row["generated_tokens"] == 12
    assert row["tokens_per_s"] == pytest.approx(12 / row["latency_s"])
    assert row["ms_per_output_token"] == pytest.approx(row["latency_s"] * 1000 / 6)
    assert row["decode_tokens_per_s"] == pytest.approx(2 / (row["tpot_ms"] / 1000))
    assert row["prefill_tokens_per_s"] == pytest.approx(2 * 16 / (row["ttft_ms"] / 1000))
    # The decomposition holds on every sample: TTFT + TPOT * (N - 1) ~ latency.
    for lat, ttft, tpot in zip(row["latency_s_samples"], row["ttft_ms_samples"], row["tpot_ms_samples"]):
        assert (ttft + tpot * 5) / 1000 == pytest.approx(lat, rel=0.05)


def test_single_output_token_has_no_tpot(tiny_cfg):
    row = measure_cell(FakeBackend(prefill_s=0.005), Cell(1, 8, 1), tiny_cfg(), 100, CPU)
    assert row["tpot_ms"] is None and row["decode_tokens_per_s"] is None and row["ttft_ms"] > 0


def test_wrong_token_count_fails_the_cell(tiny_cfg):
    with pytest.raises(TokenCountError, match="expected batch 2 x output_length 4 = 8"):
        measure_cell(FakeBackend(prefill_s=0, step_s=0, drop_tokens=1), Cell(2, 8, 4), tiny_cfg(), 100, CPU)
    rows = []
    run_sweep(tiny_cfg("batch_sizes=[2]", "input_lengths=[8]", "output_lengths=[4]"),
              FakeBackend(prefill_s=0, step_s=0, drop_tokens=1), 100, CPU, on_row=rows.append)
    assert rows[0]["status"] == "error" and "TokenCountError" in rows[0]["error"]


def test_summary_statistics():
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5 and stats["median"] == 2.5
    assert stats["p90"] == pytest.approx(3.7)
    assert stats["std"] == pytest.approx(1.2909944, rel=1e-6)
    assert stats["cv"] == pytest.approx(1.2909944 / 2.5, rel=1e-6)
    assert summarize([5.0])["std"] == 0.0 and percentile([5.0], 90) == 5.0


def test_noisy_flag(tiny_cfg):
    from llmbench.sweep import cell_metrics

    samples = [{"latency_s": x, "ttft_s": 0.001, "tpot_s": 0.001} for x in (1.0, 1.0, 2.0)]
    row = cell_metrics(Cell(1, 1, 2), samples, [], 0.10, None, "none")
    assert row["noisy"] is True and row["latency_cv"] > 0.1
    samples = [{"latency_s": x, "ttft_s": 0.001, "tpot_s": 0.001} for x in (1.0, 1.01, 0.99)]
    assert cell_metrics(Cell(1, 1, 2), samples, [], 0.10, None, "none")["noisy"] is False


@pytest.mark.parametrize("use_cache", [True, False])
def test_kv_cache_really_on(tiny_cfg, use_cache):
    """With the cache every decode step feeds one new token per row and a cache object holds the
    past; without it every step re-feeds the whole sequence. (MPT's config defaults it off.)"""
    from llmbench.backends import HFGenerateBackend
    from llmbench.models import build_model

    cfg = tiny_cfg(f"use_cache={str(use_cache).lower()}")
    model, info = build_model(cfg, CPU)
    backend = HFGenerateBackend(model, cfg, CPU)
    assert backend.generation_kwargs(5)["use_cache"] is use_cache
    seen = []

    def record(module, args, kwargs):
        seen.append((kwargs["input_ids"].shape[1], kwargs.get("cache") or kwargs.get("past_key_values")))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    input_ids, mask = make_inputs(1, 2, 16, info.vocab_size, CPU)
    backend.generate(input_ids, mask, 5)
    handle.remove()
    lengths = [n for n, _ in seen]
    assert len(seen) == 5
    if use_cache:
        assert lengths == [16, 1, 1, 1, 1]
        from transformers import DynamicCache

        cache = seen[-1][1]
        # Read after generate: the 5 forwards wrote the 16 prompt positions and 4 new ones.
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 16 + 4
    else:
        assert lengths == [16, 17, 18, 19, 20]
