"""Benchmark configuration: the schema, loading a YAML with dotlist overrides, validation.

This is the only module that knows OmegaConf. A YAML is merged onto the dataclass schema
below, so unknown keys, wrong types and missing values fail at load time naming the full
key (``model.n_heads``); ranges and cross-field rules live in ``__post_init__``. Everything
here runs before any model is built, so a typo costs a second, not a 30B model load.

The vocabulary is llm-foundry's ``scripts/inference/benchmarking`` YAMLs, so those files
still load (``tokenizer``/``tokenizer_name`` are accepted and unused: inputs are random ids).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DTYPES = ("fp32", "fp16", "bf16")
ISOLATIONS = ("none", "process")
MODEL_NAMES = ("mpt_causal_lm", "hf_causal_lm")
BACKENDS = ("hf_generate", "hf_compiled", "static_loop")


class ConfigError(ValueError):
    """A problem the user can fix in the YAML or on the command line (printed as one line, exit 2)."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError of the house format: key, offending value, what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _require_positive_ints(key: str, values: List[int]) -> None:
    _require(len(values) > 0, key, values, "must be a non-empty list of positive integers")
    for v in values:
        _require(isinstance(v, int) and not isinstance(v, bool) and v > 0, key, values,
                 "must be a non-empty list of positive integers")


@dataclass
class AttnConfig:
    """llm-foundry's ``model.attn_config``. transformers' ``MptForCausalLM`` implements only a
    subset, so every value it cannot honour is rejected instead of silently benchmarking a
    different model."""
    attn_type: str = "multihead_attention"  # transformers' MPT has no multi-query/grouped path
    attn_impl: str = "torch"  # transformers' MPT has only eager torch attention (no flash/triton)
    attn_pdrop: float = 0.0  # dropout: inactive at inference, accepted for old YAMLs
    clip_qkv: Optional[float] = None  # honoured (a clamp on the fused QKV output)
    softmax_scale: Optional[float] = None  # honoured; None = 1/sqrt(head_dim)
    qk_ln: bool = False  # not implemented by transformers' MPT
    prefix_lm: bool = False  # not implemented by transformers' MPT
    attn_uses_sequence_id: bool = False  # only matters when packing sequences in training
    alibi: bool = True  # transformers' MPT always uses ALiBi
    alibi_bias_max: int = 8  # transformers' MPT always builds the bias with 8

    def check(self, prefix: str) -> None:
        unsupported = {
            "attn_type": ("multihead_attention",),
            "attn_impl": ("torch",),
            "qk_ln": (False,),
            "prefix_lm": (False,),
            "alibi": (True,),
            "alibi_bias_max": (8,),
        }
        for key, allowed in unsupported.items():
            value = getattr(self, key)
            _require(value in allowed, f"{prefix}.{key}", value,
                     f"transformers' MptForCausalLM only implements {allowed[0]!r}; "
                     f"set {prefix}.{key}={allowed[0]} (or benchmark another architecture with hf_causal_lm)")


@dataclass
class FfnConfig:
    """llm-foundry's newer ``model.ffn_config`` block (``expansion_ratio`` moved here)."""
    ffn_type: str = "mptmlp"  # the only FFN transformers' MPT has (GELU MLP)
    expansion_ratio: Optional[int] = None  # falls back to model.expansion_ratio, then 4


@dataclass
class ModelConfig:
    """The ``model:`` block. ``name`` picks the builder; the other keys belong to one of them."""
    name: str = MISSING  # mpt_causal_lm (random-weight MPT from the keys below) | hf_causal_lm

    # --- mpt_causal_lm: llm-foundry's MPT keys, built as transformers' MptForCausalLM ---
    d_model: Optional[int] = None
    n_heads: Optional[int] = None
    n_layers: Optional[int] = None
    expansion_ratio: Optional[int] = None  # transformers' MPT hard-codes a 4x MLP
    max_seq_len: Optional[int] = None  # None = the top-level max_seq_len
    vocab_size: int = 50368
    attn_config: AttnConfig = field(default_factory=AttnConfig)
    ffn_config: FfnConfig = field(default_factory=FfnConfig)
    init_std: float = 0.02  # std of the random weights
    init_device: str = "cpu"  # accepted for old YAMLs; llmbench always builds on the target device
    emb_pdrop: float = 0.0  # dropouts are inactive at inference; accepted for old YAMLs
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    no_bias: bool = True  # transformers' MPT has no biases
    learned_pos_emb: bool = True  # with ALiBi MPT adds no position embedding; accepted for old YAMLs
    norm_type: str = "low_precision_layernorm"
    layer_norm_epsilon: float = 1e-5
    logit_scale: Optional[float] = None  # not implemented by transformers' MPT
    tokenizer_name: Optional[str] = None  # accepted, unused: inputs are random token ids

    # --- hf_causal_lm: any transformers causal LM ---
    pretrained_model_name_or_path: Optional[str] = None  # a local directory (or a hub id with network)
    pretrained: bool = False  # False: random weights from the model's config (same speed, no weights needed)
    config_overrides: Dict[str, Any] = field(default_factory=dict)  # e.g. {num_hidden_layers: 2}
    trust_remote_code: bool = False

    def check(self, max_seq_len: int) -> None:
        _require(self.name in MODEL_NAMES, "model.name", self.name, f"must be one of {list(MODEL_NAMES)}")
        if self.name == "mpt_causal_lm":
            self._check_mpt(max_seq_len)
        else:
            _require(bool(self.pretrained_model_name_or_path), "model.pretrained_model_name_or_path",
                     self.pretrained_model_name_or_path,
                     "hf_causal_lm needs a local model directory (or a hub id where the machine has network)")

    def _check_mpt(self, max_seq_len: int) -> None:
        for key in ("d_model", "n_heads", "n_layers"):
            value = getattr(self, key)
            _require(value is not None, f"model.{key}", value, "is required for mpt_causal_lm")
            _require(value > 0, f"model.{key}", value, "must be a positive integer")
        _require(self.vocab_size > 0, "model.vocab_size", self.vocab_size, "must be a positive integer")
        _require(self.d_model % self.n_heads == 0, "model.d_model", self.d_model,
                 f"must be divisible by model.n_heads={self.n_heads}")
        if self.max_seq_len is None:
            self.max_seq_len = max_seq_len
        _require(self.max_seq_len > 0, "model.max_seq_len", self.max_seq_len, "must be a positive integer")
        ratio = self.mpt_expansion_ratio
        _require(ratio == 4, "model.ffn_config.expansion_ratio" if self.ffn_config.expansion_ratio
                 is not None else "model.expansion_ratio", ratio,
                 "transformers' MptForCausalLM hard-codes a 4x MLP; only 4 can be benchmarked")
        _require(self.ffn_config.ffn_type == "mptmlp", "model.ffn_config.ffn_type", self.ffn_config.ffn_type,
                 "transformers' MptForCausalLM only implements 'mptmlp'")
        _require(self.no_bias, "model.no_bias", self.no_bias,
                 "transformers' MptForCausalLM has no biases; only true can be benchmarked")
        _require(self.logit_scale is None, "model.logit_scale", self.logit_scale,
                 "transformers' MptForCausalLM does not implement it; use null")
        _require(self.norm_type in ("low_precision_layernorm", "layernorm"), "model.norm_type", self.norm_type,
                 "transformers' MptForCausalLM uses LayerNorm: 'low_precision_layernorm' or 'layernorm'")
        _require(self.init_device in ("cpu", "meta", "mixed", "cuda"), "model.init_device", self.init_device,
                 "must be one of cpu, meta, mixed, cuda (llmbench builds on the target device regardless)")
        self.attn_config.check("model.attn_config")

    @property
    def mpt_expansion_ratio(self) -> int:
        if self.ffn_config.expansion_ratio is not None:
            return self.ffn_config.expansion_ratio
        return self.expansion_ratio if self.expansion_ratio is not None else 4


# --- long sweeps: OOM handling, resume, largest-batch search, isolation, noise guard ---
@dataclass
class MaxBatchSearchConfig:
    """The ``max_batch_search:`` block: find, per (input, output) length pair, the largest batch
    size that runs without running out of memory, by doubling from ``start`` then bisecting."""
    enabled: bool = False  # true is the same as batch_sizes: auto
    start: int = 1  # first batch size tried; doubled until a batch runs out of memory
    max: int = 1024  # never try more than this; the search reports it if nothing ran out

    def check(self) -> None:
        _require(self.start > 0, "max_batch_search.start", self.start, "must be a positive integer")
        _require(self.max >= self.start, "max_batch_search.max", self.max,
                 f"must be >= max_batch_search.start={self.start}")


def _check_long_sweep_keys(cfg: "BenchmarkConfig") -> None:
    """Validation of the long-sweep keys (called from BenchmarkConfig.__post_init__)."""
    if isinstance(cfg.batch_sizes, str):
        _require(cfg.batch_sizes == "auto", "batch_sizes", cfg.batch_sizes,
                 "must be 'auto' or a non-empty list of positive integers")
        cfg.max_batch_search.enabled = True
    elif cfg.max_batch_search.enabled:
        # [1] is the default: a YAML that only enables the block means "search".
        _require(list(cfg.batch_sizes) == [1], "batch_sizes", cfg.batch_sizes,
                 "max_batch_search.enabled=true searches the batch sizes itself; set batch_sizes=auto "
                 "or max_batch_search.enabled=false")
        cfg.batch_sizes = "auto"
    else:
        _require(isinstance(cfg.batch_sizes, (list, tuple)), "batch_sizes", cfg.batch_sizes,
                 "must be 'auto' or a non-empty list of positive integers")
        _require_positive_ints("batch_sizes", list(cfg.batch_sizes))
        cfg.batch_sizes = list(cfg.batch_sizes)
    cfg.max_batch_search.check()
    _require(cfg.isolation in ISOLATIONS, "isolation", cfg.isolation, f"must be one of {list(ISOLATIONS)}")
    _require(cfg.min_duration_s >= 0, "min_duration_s", cfg.min_duration_s, "must be 0 (off) or more seconds")


# Keys that never change the numbers of one cell: left out of the hash that resume matches on,
# so a sweep resumed with a longer batch list, or a different search range, reuses its cells.
NOT_MEASUREMENT_KEYS = ("results_dir", "resume", "batch_sizes", "input_lengths", "output_lengths",
                        "max_batch_search", "skip_larger_after_oom", "estimate_memory",
                        "backend", "backends",  # rows carry their backend; resume matches it too
                        # validation only (MPT's ALiBi table size, model.max_seq_len, is hashed):
                        "max_seq_len",
                        # change what is derived from the samples, not the samples:
                        "noise_cv_threshold", "measure_peaks", "peak_memory_bandwidth_gbs", "peak_tflops")
# --- end of long sweeps ---


@dataclass
class DeepSpeedConfig:
    """The ``deepspeed:`` block: how ``deepspeed.init_inference`` wraps the model (``use_deepspeed: true``).

    The weights' dtype is ``model_dtype``. Checks that need the machine (the launcher's world size,
    CUDA present, heads divisible by ``tp_size``) are in ``llmbench.distributed.check_deepspeed``.
    """
    tp_size: Optional[int] = None  # tensor-parallel ranks; null = the launcher's world size (1 without one)
    replace_with_kernel_inject: Optional[bool] = None  # DeepSpeed's fused CUDA kernels; null = true on CUDA,
    # false on CPU (they do not exist there)
    enable_cuda_graph: bool = False  # accepted as false only: it cannot take effect under generate (see check)
    check_outputs: bool = True  # before timing, compare greedy output with the plain HF model's

    def check(self, use_deepspeed: bool, device: Optional[str], backends: List[str], isolation: str) -> None:
        if not use_deepspeed:
            for key, unset in (("tp_size", None), ("replace_with_kernel_inject", None), ("enable_cuda_graph", False)):
                value = getattr(self, key)
                _require(value == unset, f"deepspeed.{key}", value,
                         "only applies with use_deepspeed: true; set use_deepspeed=true or remove it")
            return
        _require(self.tp_size is None or self.tp_size > 0, "deepspeed.tp_size", self.tp_size,
                 "must be null (the launcher's world size) or a positive integer")
        _require(backends == ["hf_generate"], "backends" if len(backends) > 1 else "backend",
                 backends if len(backends) > 1 else backends[0],
                 "use_deepspeed wraps eager generate; use backend: hf_generate with use_deepspeed: true")
        _require(isolation == "none", "isolation", isolation,
                 "a DeepSpeed run keeps its ranks' process group for the whole sweep; use isolation: none")
        if device == "cpu":
            _require(self.replace_with_kernel_inject is not True, "deepspeed.replace_with_kernel_inject", True,
                     "DeepSpeed's injected kernels are CUDA-only and do not exist on the CPU; "
                     "set it to false (or null) for device: cpu")
        # DeepSpeed (0.19.8, inference/engine.py) graphs only its engine's forward(); generate()
        # goes to the wrapped model's own forward, so the graph is never built or replayed and a
        # row saying enable_cuda_graph: true would describe a run that did not happen.
        _require(not self.enable_cuda_graph, "deepspeed.enable_cuda_graph", True,
                 "it cannot take effect: DeepSpeed graphs its engine's forward, which generate never calls; "
                 "set it to false (for CUDA graphs use backend: hf_compiled or static_loop without DeepSpeed)")


@dataclass
class BenchmarkConfig:
    """The whole YAML. Defaults match llm-foundry's benchmarking script where it had one."""
    model: ModelConfig = MISSING
    benchmark_name: str = "benchmark"  # names the results file: <results_dir>/<benchmark_name>.jsonl
    max_seq_len: int = 2048  # input_length + output_length must fit in it
    device: Optional[str] = None  # null = cuda if available, else cpu
    model_dtype: str = "bf16"  # fp32 | fp16 | bf16: the dtype of the weights
    autocast_dtype: Optional[str] = None  # null, or run generate under torch.autocast in this dtype
    use_deepspeed: bool = False  # wrap the model with deepspeed.init_inference (see llmbench/distributed.py)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)  # init_inference options
    backend: str = "hf_generate"  # hf_generate (eager HF generate) | hf_compiled (static cache + torch.compile)
    backends: Optional[List[str]] = None  # several backends, same model, same sweep, side by side (overrides backend)
    compile_tuning: bool = False  # compiled backends on GPU: tune inductor's kernels per shape (slow compiles)
    batch_sizes: Any = field(default_factory=lambda: [1])  # a list of positive integers, or 'auto' (search)
    input_lengths: List[int] = field(default_factory=lambda: [128])
    output_lengths: List[int] = field(default_factory=lambda: [8])
    use_cache: bool = True  # the KV cache; passed to generate explicitly (MPT's config defaults it off)
    num_batches: int = 5  # timed generate calls per cell; every one is kept as a sample
    num_warmup_batches: int = 3  # untimed generate calls per cell before the timed ones
    seed: int = 17  # seeds the random input ids and the random weights
    results_dir: str = "results"
    noise_cv_threshold: float = 0.10  # a cell whose latency CV exceeds this is flagged noisy
    # --- hardware limits for MBU/MFU (roofline.py) ---
    measure_peaks: bool = False  # measure bandwidth (big copy) and matmul FLOP/s on the spot
    peak_memory_bandwidth_gbs: Optional[float] = None  # override the datasheet (GB/s = 1e9 bytes/s)
    peak_tflops: Optional[float] = None  # override the datasheet dense TFLOP/s for model_dtype
    variables: Dict[str, Any] = field(default_factory=dict)  # free helpers for ${variables.x} interpolation
    tokenizer: Optional[Dict[str, Any]] = None  # accepted for llm-foundry YAMLs, unused
    tokenizer_name: Optional[str] = None  # accepted for llm-foundry YAMLs, unused
    # --- long sweeps (README "Long sweeps") ---
    skip_larger_after_oom: bool = True  # after an OOM, skip larger batches of the same (input, output)
    resume: bool = False  # skip cells already in the results file with the same measurement hash
    isolation: str = "none"  # none | process: each cell in a fresh child process (rebuilds the model)
    min_duration_s: float = 0.0  # keep timing until num_batches AND this many seconds of samples
    estimate_memory: bool = True  # skip cells whose KV cache alone exceeds free memory (boundary still tried)
    max_batch_search: MaxBatchSearchConfig = field(default_factory=MaxBatchSearchConfig)
    # --- end of long sweeps ---

    @property
    def compute_dtype(self) -> str:
        """The dtype the matmuls and the KV cache run in: autocast's when set, else the weights'."""
        return self.autocast_dtype or self.model_dtype

    @property
    def backend_names(self) -> List[str]:
        """The backends this run sweeps, in order."""
        return list(self.backends) if self.backends else [self.backend]

    def __post_init__(self) -> None:
        _require(bool(self.benchmark_name) and "/" not in self.benchmark_name, "benchmark_name",
                 self.benchmark_name, "must be a non-empty name without '/' (it names the results file)")
        _require(self.max_seq_len > 0, "max_seq_len", self.max_seq_len, "must be a positive integer")
        _require(self.model_dtype in DTYPES, "model_dtype", self.model_dtype, f"must be one of {list(DTYPES)}")
        _require(self.autocast_dtype is None or self.autocast_dtype in DTYPES, "autocast_dtype",
                 self.autocast_dtype, f"must be null or one of {list(DTYPES)}")
        _require(self.device is None or self.device == "cpu" or self.device.startswith("cuda"), "device",
                 self.device, "must be null (auto), 'cpu', 'cuda' or 'cuda:N'")
        _require(self.backend in BACKENDS, "backend", self.backend, f"must be one of {list(BACKENDS)}")
        if self.backends is not None:
            _require(len(self.backends) > 0 and all(b in BACKENDS for b in self.backends)
                     and len(set(self.backends)) == len(self.backends), "backends", self.backends,
                     f"must be a non-empty list of distinct names from {list(BACKENDS)}")
        compiled = [b for b in self.backend_names if b != "hf_generate"]
        if compiled:
            _require(self.num_warmup_batches >= 2, "num_warmup_batches", self.num_warmup_batches,
                     f"must be >= 2 with {compiled[0]}: the first call of each shape compiles and the "
                     "second still settles, so neither may be timed")
        for name in ("hf_compiled", "static_loop"):
            if name in self.backend_names:
                # transformers compiles only with a static cache: without one hf_compiled would
                # silently run eager generate under the hf_compiled label.
                _require(self.use_cache, "use_cache", self.use_cache,
                         f"must be true with {name} (it decodes from a static KV cache)")
        for key in ("peak_memory_bandwidth_gbs", "peak_tflops"):
            value = getattr(self, key)
            _require(value is None or value > 0, key, value, "must be null or a positive number")
        _check_long_sweep_keys(self)
        for key in ("input_lengths", "output_lengths"):
            _require_positive_ints(key, getattr(self, key))
        _require(self.num_batches > 0, "num_batches", self.num_batches, "must be a positive integer")
        _require(self.num_warmup_batches >= 0, "num_warmup_batches", self.num_warmup_batches,
                 "must be 0 or more")
        _require(0 < self.noise_cv_threshold, "noise_cv_threshold", self.noise_cv_threshold, "must be > 0")
        self.model.check(self.max_seq_len)
        self.deepspeed.check(self.use_deepspeed, self.device, self.backend_names, self.isolation)
        longest = max(self.input_lengths) + max(self.output_lengths)
        _require(longest <= self.max_seq_len, "max_seq_len", self.max_seq_len,
                 f"max(input_lengths) + max(output_lengths) = {longest} must be <= max_seq_len; "
                 "raise max_seq_len or shorten the lengths")
        if self.model.name == "mpt_causal_lm":
            _require(longest <= self.model.max_seq_len, "model.max_seq_len", self.model.max_seq_len,
                     f"max(input_lengths) + max(output_lengths) = {longest} must fit in the model's "
                     "ALiBi table; raise model.max_seq_len")


def _one_line(err: OmegaConfBaseException) -> str:
    """OmegaConf errors are multi-line with object dumps; keep the key and the first line."""
    msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{key}: {msg}" if key and key not in msg else msg


def load_config(path: str, overrides: Optional[List[str]] = None) -> BenchmarkConfig:
    """Load a YAML, apply ``key=value`` dotlist overrides, validate, and return the typed config.

    Raises ConfigError (never a traceback-worthy exception) for anything the user can fix.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of keys, got {type(raw).__name__}")
    try:
        schema = OmegaConf.structured(BenchmarkConfig)
        merged = OmegaConf.merge(schema, OmegaConf.create(raw), OmegaConf.from_dotlist(list(overrides or [])))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err)) from None
    assert isinstance(cfg, BenchmarkConfig)
    return cfg


def config_to_dict(cfg: BenchmarkConfig) -> Dict[str, Any]:
    """The resolved config as plain data (interpolations applied), for files and hashing."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def _hash(data: Dict[str, Any]) -> str:
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:12]


def config_hash(cfg: BenchmarkConfig) -> str:
    """A short stable hash of the resolved config (not where results go, nor whether it resumes)."""
    data = config_to_dict(cfg)
    for key in ("results_dir", "resume"):
        data.pop(key, None)
    return _hash(data)


# Keys added after result files existed, with their defaults: hashed only when set otherwise, so
# results measured before a key existed (with its default behaviour) still resume.
KEYS_HASHED_ONLY_WHEN_SET = {"compile_tuning": False}


def measurement_hash(cfg: BenchmarkConfig) -> str:
    """The hash of everything that can change one cell's numbers: the resolved config without the
    grid and the sweep policy. Resume identifies a cell by (measurement_hash, batch, input, output)."""
    data = config_to_dict(cfg)
    for key in NOT_MEASUREMENT_KEYS:
        data.pop(key, None)
    for key, default in KEYS_HASHED_ONLY_WHEN_SET.items():
        if data.get(key) == default:
            data.pop(key)
    return _hash(data)


def check_environment(cfg: BenchmarkConfig) -> None:
    """Checks that need the machine (CUDA present, model path reachable); still before any model is built."""
    import torch

    if cfg.device is not None and cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device!r} is invalid: this machine has no CUDA device; "
                          "use device: cpu or null (auto)")
    if cfg.model.name == "hf_causal_lm":
        _check_model_source(cfg.model)
    from llmbench.models import build_hf_config, check_model_fits

    check_model_fits(build_hf_config(cfg.model, cfg.max_seq_len), cfg)  # config_overrides too
    _check_results_dir(cfg.results_dir)
    if cfg.use_deepspeed:  # world size, heads divisible by tp_size, kernels on CPU
        from llmbench.distributed import check_deepspeed

        check_deepspeed(cfg)


def _check_results_dir(path: str) -> None:
    """Results are written as they are measured: the folder must be writable before we start."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"results_dir={path!r} is invalid: {err.strerror or err}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"results_dir={path!r} is invalid: not writable")


def _check_model_source(model: ModelConfig) -> None:
    path = model.pretrained_model_name_or_path
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"model.pretrained_model_name_or_path={path!r} is invalid: "
                              "the directory has no config.json")
        return
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"model.pretrained_model_name_or_path={path!r} is invalid: no such local directory")
    # A hub id: usable if it is in the local cache, or if the hub answers.
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=model.trust_remote_code)
        return
    except Exception:
        pass
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(path, timeout=10)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"model.pretrained_model_name_or_path={path!r} is invalid: neither a local directory "
                          f"nor reachable on the Hugging Face Hub ({reason[:120]})") from None
