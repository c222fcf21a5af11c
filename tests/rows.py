"""Hand-made result rows with known answers, for the analysis tests (no measurement needed)."""


def make_row(batch_size, latency_s=None, tokens_per_s=None, status="ok", input_length=512, output_length=64,
             model_name="mpt-7b", device_name="NVIDIA H100", backend="hf_generate", dtype="bf16", run_id="r1",
             ttft_ms=None, tpot_ms=None, samples=None, **extra):
    """One result row. Non-ok rows get null metrics, like the sweep writes them."""
    row = {"model_name": model_name, "backend": backend, "dtype": dtype, "device": "cuda",
           "device_name": device_name, "batch_size": batch_size, "input_length": input_length,
           "output_length": output_length, "status": status, "run_id": run_id, "benchmark_name": "t"}
    if status != "ok":
        return {**row, "latency_s": None, "tokens_per_s": None, "ttft_ms": None, "tpot_ms": None,
                "latency_s_samples": [], **extra}
    if tokens_per_s is None:
        tokens_per_s = batch_size * output_length / latency_s
    return {**row, "latency_s": latency_s, "tokens_per_s": tokens_per_s,
            "latency_s_samples": samples if samples is not None else [latency_s] * 3,
            "ttft_ms": ttft_ms, "tpot_ms": tpot_ms, **extra}
