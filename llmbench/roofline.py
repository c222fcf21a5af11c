"""How close each result is to what the hardware can physically do: MBU of decode, MFU of prefill.

Definitions (Databricks/MosaicML, "LLM Inference Performance Engineering: Best Practices"):

    MBU = bytes that one decode step must read / TPOT / peak memory bandwidth
    MFU = FLOPs of the prefill / TTFT / peak dense FLOP/s for the dtype

Byte count of one decode step, batch B, at a context of c tokens:
    weight bytes: every parameter once, except an input-embedding table that is not tied to the
        output head (a lookup reads only B of its rows, so it is left out);
    KV-cache bytes: 2 (K and V) x n_layers x n_kv_heads x head_dim x c x B x bytes per element.
    c is averaged over the decode steps of the cell: the steps after the first token attend to
    L+1 ... L+N-1 positions, a mean of L + N/2.

FLOP count of the prefill, batch B, input length L (multiply-add = 2 FLOPs):
    2 x B x L x (matmul parameters of the body: every Linear weight except the output head)
    + 2 x B x (output head parameters)     # generate computes logits for the last position only
    + 2 x n_layers x B x L^2 x d_attn      # QK^T and AV, causal half (the useful work)
    Embedding lookups, norms, softmax and activations are not counted (lower bound -> MFU is
    never overstated).

Peaks are the dense (not sparse) datasheet figures of the device, matched by name, unless the
YAML gives them or ``measure_peaks: true`` measures them on the spot. A utilisation above 1 is
a bug in these counts, never a result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

# name fragment (matched in order, case-insensitive) -> (memory GB/s, {dtype: dense TFLOP/s}).
# fp32 is the plain (non-TF32) rate: torch keeps TF32 off for matmuls by default.
KNOWN_DEVICES = [
    ("H100 PCIe", 2000.0, {"bf16": 756.0, "fp16": 756.0, "fp32": 51.2}),
    ("H100 NVL", 3900.0, {"bf16": 835.0, "fp16": 835.0, "fp32": 60.0}),
    ("H100", 3350.0, {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),  # SXM5 (reports "H100 80GB HBM3")
    ("H200", 4800.0, {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("A100-SXM4-80GB", 2039.0, {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("A100 80GB PCIe", 1935.0, {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("A100", 1555.0, {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),  # 40 GB (SXM4 and PCIe)
    ("L40S", 864.0, {"bf16": 362.1, "fp16": 362.1, "fp32": 91.6}),
    ("L4", 300.0, {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    ("A10G", 600.0, {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),  # A10 datasheet; AWS publishes none
    ("A10", 600.0, {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
]


@dataclass
class Peaks:
    """Peak memory bandwidth (GB/s, 1e9 bytes) and dense FLOP/s (TFLOP/s) of one device."""
    memory_bandwidth_gbs: Optional[float]
    tflops: Optional[float]
    source: str  # "datasheet:<name>", "yaml", "measured", or "unknown"


def lookup_peaks(device_name: str, dtype: str) -> Peaks:
    """Datasheet peaks for a device name as torch reports it (e.g. 'NVIDIA H100 80GB HBM3')."""
    lowered = device_name.lower()
    for fragment, bandwidth, tflops in KNOWN_DEVICES:
        if fragment.lower() in lowered:
            return Peaks(bandwidth, tflops.get(dtype), f"datasheet:{fragment}")
    return Peaks(None, None, "unknown")


def resolve_peaks(device_name: str, dtype: str, bandwidth_gbs: Optional[float] = None,
                  tflops: Optional[float] = None, measured: Optional[Peaks] = None) -> Peaks:
    """YAML overrides win, then measured values, then the datasheet table."""
    base = measured or lookup_peaks(device_name, dtype)
    if bandwidth_gbs is None and tflops is None:
        return base
    return Peaks(bandwidth_gbs if bandwidth_gbs is not None else base.memory_bandwidth_gbs,
                 tflops if tflops is not None else base.tflops, "yaml")


@dataclass
class ModelShape:
    """The numbers the byte and FLOP counts need, read off the built model (models.py)."""
    param_bytes: int  # all parameters as stored, tied weights once
    untied_embedding_bytes: int  # input embedding tables not shared with the output head
    body_matmul_params: int  # Linear weights of the body (not the output head)
    head_params: int  # output head (lm_head) weights
    n_layers: int
    n_kv_heads: int
    head_dim: int
    d_attn: int  # n_heads x head_dim
    bytes_per_element: int  # of the KV cache (= of the weights' dtype)


def decode_bytes_per_step(shape: ModelShape, batch_size: int, input_length: int, output_length: int) -> float:
    """Bytes one decode step must read, averaged over the cell's decode steps."""
    weight_bytes = shape.param_bytes - shape.untied_embedding_bytes
    mean_context = input_length + output_length / 2
    kv_bytes = (2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * mean_context * batch_size
                * shape.bytes_per_element)
    return weight_bytes + kv_bytes


def prefill_flops(shape: ModelShape, batch_size: int, input_length: int) -> float:
    """FLOPs of the prefill forward (see module docstring)."""
    dense = 2 * batch_size * input_length * shape.body_matmul_params + 2 * batch_size * shape.head_params
    attention = 2 * shape.n_layers * batch_size * input_length ** 2 * shape.d_attn
    return float(dense + attention)


def roofline_fields(shape: ModelShape, peaks: Peaks, batch_size: int, input_length: int, output_length: int,
                    ttft_ms: Optional[float], tpot_ms: Optional[float], num_devices: int = 1) -> Dict[str, object]:
    """MBU/MFU and the ideal times of one cell. ``num_devices``: GPUs sharing the work (tensor
    parallel degree); their peaks add up. Fields are null where an input is unknown."""
    step_bytes = decode_bytes_per_step(shape, batch_size, input_length, output_length)
    flops = prefill_flops(shape, batch_size, input_length)
    bandwidth = peaks.memory_bandwidth_gbs * 1e9 * num_devices if peaks.memory_bandwidth_gbs else None
    flops_rate = peaks.tflops * 1e12 * num_devices if peaks.tflops else None
    tpot_limit_ms = step_bytes / bandwidth * 1e3 if bandwidth else None
    ttft_limit_ms = flops / flops_rate * 1e3 if flops_rate else None
    return {
        "decode_bytes_per_step": step_bytes,
        "prefill_flops": flops,
        "peak_memory_bandwidth_gbs": peaks.memory_bandwidth_gbs,
        "peak_tflops": peaks.tflops,
        "peaks_source": peaks.source,
        "tpot_limit_ms": tpot_limit_ms,  # decode time per token if it ran at peak bandwidth
        "ttft_limit_ms": ttft_limit_ms,  # prefill time if it ran at peak FLOP/s
        "mbu": tpot_limit_ms / tpot_ms if tpot_limit_ms and tpot_ms else None,
        "mfu": ttft_limit_ms / ttft_ms if ttft_limit_ms and ttft_ms else None,
        "achieved_memory_bandwidth_gbs": step_bytes / (tpot_ms / 1e3) / 1e9 if tpot_ms else None,
        "achieved_tflops": flops / (ttft_ms / 1e3) / 1e12 if ttft_ms else None,
    }


def measure_peaks(device, dtype) -> Peaks:
    """Measure this device's bandwidth (a large device-to-device copy, bytes read + written) and
    dense matmul rate in ``dtype``: the only honest peaks on a CPU or an unknown GPU."""
    import time

    import torch

    from llmbench.timing import sync

    on_gpu = device.type == "cuda"
    copy_bytes = (2 if on_gpu else 0.25) * 1024 ** 3
    src = torch.empty(int(copy_bytes) // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    n = 4096 * 2 if on_gpu else 1024
    a = torch.randn(n, n, device=device).to(dtype)  # random data: zeros run faster than real inputs
    b = torch.randn(n, n, device=device).to(dtype)

    def median_seconds(fn, repeats):
        fn()
        sync(device)  # warm-up: allocation, kernel selection
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]  # median

    copy_s = median_seconds(lambda: dst.copy_(src), 10)
    matmul_s = median_seconds(lambda: torch.mm(a, b), 10 if on_gpu else 3)
    del src, dst, a, b
    if on_gpu:
        torch.cuda.empty_cache()  # 4.5 GB of buffers: give them back before the model's cells
    return Peaks(2 * copy_bytes / copy_s / 1e9, 2 * n ** 3 / matmul_s / 1e12, "measured")
