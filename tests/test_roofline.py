"""MBU/MFU formulas on hand-computed cases, the peaks table, and the model counts they use."""
import pytest
import torch

from llmbench.roofline import (ModelShape, Peaks, decode_bytes_per_step, lookup_peaks, prefill_flops,
                               resolve_peaks, roofline_fields)

# A made-up model with round numbers so every count can be done by hand.
SHAPE = ModelShape(param_bytes=1_000_000, untied_embedding_bytes=100_000, body_matmul_params=400_000,
                   head_params=50_000, n_layers=2, n_kv_heads=4, head_dim=8, d_attn=32, bytes_per_element=2)


def test_decode_bytes_by_hand():
    # weights 1e6 - 1e5 = 900_000; KV: 2 * 2 layers * 4 heads * 8 dim * (10 + 4/2) ctx * 3 batch * 2 B = 9216
    assert decode_bytes_per_step(SHAPE, batch_size=3, input_length=10, output_length=4) == 900_000 + 9216


def test_prefill_flops_by_hand():
    # 2*B*L*body + 2*B*head + 2*layers*B*L^2*d_attn = 2*3*10*400k + 2*3*50k + 2*2*3*100*32
    assert prefill_flops(SHAPE, batch_size=3, input_length=10) == 24_000_000 + 300_000 + 38_400


def test_mbu_mfu_by_hand():
    peaks = Peaks(memory_bandwidth_gbs=1.0, tflops=0.001, source="test")  # 1e9 B/s, 1e9 FLOP/s
    fields = roofline_fields(SHAPE, peaks, 3, 10, 4, ttft_ms=100.0, tpot_ms=2.0)
    step_bytes = 909_216
    assert fields["tpot_limit_ms"] == pytest.approx(step_bytes / 1e9 * 1e3)
    assert fields["mbu"] == pytest.approx(step_bytes / 1e9 * 1e3 / 2.0)
    flops = 24_338_400
    assert fields["ttft_limit_ms"] == pytest.approx(flops / 1e9 * 1e3)
    assert fields["mfu"] == pytest.approx((flops / 1e9 * 1e3) / 100.0)
    assert fields["achieved_memory_bandwidth_gbs"] == pytest.approx(step_bytes / 2e-3 / 1e9)
    # Two devices (tensor parallel) double the peak: utilisation halves.
    two = roofline_fields(SHAPE, peaks, 3, 10, 4, ttft_ms=100.0, tpot_ms=2.0, num_devices=2)
    assert two["mbu"] == pytest.approx(fields["mbu"] / 2)


def test_unknown_peaks_give_null_not_zero():
    fields = roofline_fields(SHAPE, Peaks(None, None, "unknown"), 1, 10, 4, ttft_ms=1.0, tpot_ms=1.0)
    assert fields["mbu"] is None and fields["mfu"] is None and fields["tpot_limit_ms"] is None
    assert roofline_fields(SHAPE, Peaks(1.0, 1.0, "x"), 1, 10, 1, ttft_ms=1.0, tpot_ms=None)["mbu"] is None


@pytest.mark.parametrize("name, bandwidth, bf16", [
    ("NVIDIA H100 80GB HBM3", 3350.0, 989.4),
    ("NVIDIA H100 PCIe", 2000.0, 756.0),
    ("NVIDIA H200", 4800.0, 989.4),
    ("NVIDIA A100-SXM4-80GB", 2039.0, 312.0),
    ("NVIDIA A100-SXM4-40GB", 1555.0, 312.0),
    ("NVIDIA A100 80GB PCIe", 1935.0, 312.0),
    ("NVIDIA L4", 300.0, 121.0),
    ("NVIDIA A10G", 600.0, 125.0),
])
def test_datasheet_lookup(name, bandwidth, bf16):
    peaks = lookup_peaks(name, "bf16")
    assert peaks.memory_bandwidth_gbs == bandwidth and peaks.tflops == bf16


def test_yaml_overrides_win():
    assert lookup_peaks("AMD EPYC", "fp32").source == "unknown"
    peaks = resolve_peaks("NVIDIA H100 80GB HBM3", "bf16", bandwidth_gbs=3000.0)
    assert peaks.memory_bandwidth_gbs == 3000.0 and peaks.tflops == 989.4 and peaks.source == "yaml"


def test_model_shape_counts_tied_and_untied():
    from transformers import AutoModelForCausalLM, LlamaConfig, MptConfig

    from llmbench.models import model_shape

    mpt = AutoModelForCausalLM.from_config(MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=100))
    shape = model_shape(mpt)
    # MPT ties lm_head to wte: the table is read once per step by the head, never skipped.
    assert shape.untied_embedding_bytes == 0 and shape.head_params == 100 * 64
    assert shape.body_matmul_params == 2 * (64 * 192 + 64 * 64 + 2 * 64 * 256)
    assert (shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.d_attn) == (2, 4, 16, 64)
    llama = AutoModelForCausalLM.from_config(LlamaConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, vocab_size=100, tie_word_embeddings=False))
    shape = model_shape(llama)
    assert shape.untied_embedding_bytes == 100 * 64 * 4  # fp32 embedding table, looked up not read
    assert shape.n_kv_heads == 2 and shape.head_dim == 16
    assert shape.bytes_per_element == 4


def test_measure_peaks_on_cpu_is_positive():
    from llmbench.roofline import measure_peaks

    peaks = measure_peaks(torch.device("cpu"), torch.float32)
    assert peaks.source == "measured" and peaks.memory_bandwidth_gbs > 0 and peaks.tflops > 0
