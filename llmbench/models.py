"""Build the model to benchmark: a random-weight MPT from llm-foundry keys, or any HF causal LM.

Random weights give the real speed of a model of that shape (the same kernels run on the same
shapes), so no weights need downloading. Models are constructed directly on the target device
in the target dtype (``torch.device`` context + ``dtype=``), so a 30B bf16 model never exists as
a 120 GB fp32 copy in host memory first. transformers' own per-module initialisation (a normal
draw per element, slow on CPUs) is skipped; ``fill_random_`` writes cheap random values instead
(benchmarks/build_memory.py measures both routes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from llmbench.config import BenchmarkConfig, ConfigError, ModelConfig
from llmbench.roofline import ModelShape

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class ModelInfo:
    """What results rows say about the model."""
    model_name: str
    num_params: int
    param_bytes: int  # bytes of all weights, as stored (decode reads them once per step)
    vocab_size: int
    shape: ModelShape  # what the MBU/MFU byte and FLOP counts need


def resolve_device(cfg: BenchmarkConfig) -> torch.device:
    """``device: null`` means the first CUDA device when there is one, else the CPU."""
    if cfg.device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def build_hf_config(model_cfg: ModelConfig, max_seq_len: int):
    """The transformers config object for the model, without building any weights."""
    from transformers import AutoConfig, MptConfig

    if model_cfg.name == "mpt_causal_lm":
        attn = model_cfg.attn_config
        return MptConfig(
            d_model=model_cfg.d_model,
            n_heads=model_cfg.n_heads,
            n_layers=model_cfg.n_layers,
            expansion_ratio=model_cfg.mpt_expansion_ratio,
            max_seq_len=model_cfg.max_seq_len or max_seq_len,
            vocab_size=model_cfg.vocab_size,
            layer_norm_epsilon=model_cfg.layer_norm_epsilon,
            initializer_range=model_cfg.init_std,
            attn_config={"attn_type": attn.attn_type, "attn_impl": attn.attn_impl, "clip_qkv": attn.clip_qkv,
                         "softmax_scale": attn.softmax_scale, "alibi": attn.alibi,
                         "alibi_bias_max": attn.alibi_bias_max},
        )
    path = os.path.expanduser(model_cfg.pretrained_model_name_or_path)
    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    for key, value in model_cfg.config_overrides.items():
        if not hasattr(hf_config, key):
            raise ConfigError(f"model.config_overrides.{key}={value!r} is invalid: "
                              f"{type(hf_config).__name__} has no attribute {key!r}")
        try:
            setattr(hf_config, key, value)
        except Exception as err:  # transformers' strict config fields validate types
            raise ConfigError(f"model.config_overrides.{key}={value!r} is invalid: "
                              f"{str(err).splitlines()[0][:160]}") from None
    return hf_config


def check_model_fits(hf_config, cfg: BenchmarkConfig) -> None:
    """The longest sequence of the sweep must fit the model's position table."""
    limit = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "max_seq_len", None)
    longest = max(cfg.input_lengths) + max(cfg.output_lengths)
    if limit is not None and longest > limit:
        raise ConfigError(f"input_lengths/output_lengths: max(input)+max(output) = {longest} exceeds the model's "
                          f"{limit} positions; shorten them or raise it in model.config_overrides")


def build_model(cfg: BenchmarkConfig, device: torch.device):
    """Build the model on ``device`` in ``cfg.model_dtype``, in eval mode. Returns (model, ModelInfo)."""
    from transformers import AutoModelForCausalLM

    dtype = TORCH_DTYPES[cfg.model_dtype]
    hf_config = build_hf_config(cfg.model, cfg.max_seq_len)
    check_model_fits(hf_config, cfg)
    # MPT's config defaults use_cache to False; generate gets it explicitly too (backends.py).
    hf_config.use_cache = cfg.use_cache
    torch.manual_seed(cfg.seed)  # the same random weights for the same seed
    if cfg.model.name == "hf_causal_lm" and cfg.model.pretrained:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.expanduser(cfg.model.pretrained_model_name_or_path), config=hf_config, dtype=dtype,
            device_map={"": device}, trust_remote_code=cfg.model.trust_remote_code)
    else:
        from transformers.initialization import no_init_weights

        # Parameters are allocated on the device in the final dtype and filled there.
        with torch.device(device), no_init_weights():
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype,
                                                     trust_remote_code=cfg.model.trust_remote_code)
        model.tie_weights()  # tying lives in the skipped init_weights in some transformers versions
        fill_random_(model, std=getattr(hf_config, "initializer_range", None) or cfg.model.init_std,
                     seed=cfg.seed)
    model.eval()
    model.requires_grad_(False)
    return model, describe_model(model, cfg)


# A prime, so that the repeating random tile does not line up with row lengths (powers of two):
# weight rows stay distinct, and greedy decoding does not meet artificial exact ties.
RANDOM_TILE = 1_048_573


@torch.no_grad()
def fill_random_(model: torch.nn.Module, std: float, seed: int) -> None:
    """Random weights at memory-copy speed: matrices get a repeating tile of N(0, std) values,
    biases 0 and other vectors (norm scales) 1, as a trained model's would be near. Speed does
    not depend on the values, only on them being ordinary numbers (no NaN, denormals, zeros)."""
    generator = torch.Generator().manual_seed(seed)
    tiles = {}
    for name, param in model.named_parameters():
        if param.ndim < 2:
            param.fill_(0.0 if name.endswith("bias") else 1.0)
            continue
        key = (param.device, param.dtype)
        if key not in tiles:
            values = torch.randn(RANDOM_TILE, generator=generator) * std
            tiles[key] = torch.cat([values, values]).to(param.device, param.dtype)  # any window of RANDOM_TILE
        # Each matrix starts at its own random place in the tile, so no two are equal (q != k != v).
        start = int(torch.randint(RANDOM_TILE, (1,), generator=generator))
        tile = tiles[key][start:start + RANDOM_TILE]
        flat = param.view(-1)
        whole = flat.numel() // RANDOM_TILE
        if whole:
            flat[: whole * RANDOM_TILE].view(whole, RANDOM_TILE).copy_(tile.expand(whole, RANDOM_TILE))
        rest = flat.numel() - whole * RANDOM_TILE
        if rest:
            flat[whole * RANDOM_TILE:].copy_(tile[:rest])


def describe_model(model: torch.nn.Module, cfg: BenchmarkConfig) -> ModelInfo:
    # Tied weights (MPT's lm_head = wte) appear once in parameters(), as they are stored once.
    params = list(model.parameters())
    num_params = sum(p.numel() for p in params)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    if cfg.model.name == "mpt_causal_lm":
        name = f"mpt-{format_count(num_params)}"
    else:
        name = os.path.basename(os.path.normpath(cfg.model.pretrained_model_name_or_path))
        if cfg.model.config_overrides:  # another shape than the folder's name says
            name = f"{name}-{format_count(num_params)}"
    return ModelInfo(model_name=name, num_params=num_params, param_bytes=param_bytes,
                     vocab_size=model.config.vocab_size, shape=model_shape(model))


def kv_heads(hf_config) -> int:
    """Key/value heads per layer: fewer than the query heads under multi-query/grouped attention."""
    heads = hf_config.num_attention_heads
    if getattr(hf_config, "num_key_value_heads", None):
        return hf_config.num_key_value_heads
    if getattr(hf_config, "model_type", "") == "falcon":
        if getattr(hf_config, "new_decoder_architecture", False):
            return hf_config.num_kv_heads
        return 1 if getattr(hf_config, "multi_query", False) else heads
    return heads


def model_shape(model: torch.nn.Module) -> ModelShape:
    """Read the counts roofline.py needs off the built model and its config."""
    from transformers.pytorch_utils import Conv1D

    config = model.config
    head = model.get_output_embeddings()
    head_weight = head.weight if head is not None else None
    untied_embedding_bytes = body_matmul_params = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight is head_weight:
            continue
        if isinstance(module, torch.nn.Embedding):
            untied_embedding_bytes += weight.numel() * weight.element_size()
        elif isinstance(module, (torch.nn.Linear, Conv1D)):
            body_matmul_params += weight.numel()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelShape(
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        untied_embedding_bytes=untied_embedding_bytes,
        body_matmul_params=body_matmul_params,
        head_params=head_weight.numel() if head_weight is not None else 0,
        n_layers=config.num_hidden_layers,
        n_kv_heads=kv_heads(config),
        head_dim=head_dim,
        d_attn=heads * head_dim,
        bytes_per_element=next(model.parameters()).element_size(),
    )


def format_count(n: int) -> str:
    """6_649_000_000 -> '6.6b', 1_234_000 -> '1.2m': a short, human label for model size."""
    for unit, scale in (("b", 1e9), ("m", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
