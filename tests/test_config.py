"""Bad input is caught at load time with a one-line message naming the key; good YAMLs load."""
import os
import textwrap

import pytest

from conftest import ROOT
from llmbench.config import ConfigError, check_environment, load_config

TINY = os.path.join(ROOT, "yamls", "tiny.yaml")


@pytest.mark.parametrize("override, match", [
    ("model.n_head=3", r"model\.n_head.*not in.*Did you mean: 'n_heads'"),
    ("unknown_key=1", r"unknown_key"),
    ("num_batches=abc", r"num_batches.*'abc'"),
    ("batch_sizes=[0]", r"batch_sizes=\[0\].*positive"),
    ("input_lengths=[]", r"input_lengths.*non-empty"),
    ("output_lengths=[-1]", r"output_lengths.*positive"),
    ("num_batches=0", r"num_batches=0.*positive"),
    ("num_warmup_batches=-1", r"num_warmup_batches=-1"),
    ("model_dtype=fp64", r"model_dtype='fp64'.*fp32.*fp16.*bf16"),
    ("autocast_dtype=int8", r"autocast_dtype='int8'"),
    ("backend=vllm", r"backend='vllm'.*hf_generate"),
    ("device=tpu", r"device='tpu'"),
    ("output_lengths=[300]", r"max_seq_len=256.*428"),
    ("model.name=gpt", r"model.name='gpt'.*mpt_causal_lm"),
    ("model.n_heads=null", r"model.n_heads=None.*required"),
    ("model.d_model=130", r"model.d_model=130.*divisible"),
    ("model.attn_config.attn_impl=triton", r"model.attn_config.attn_impl='triton'.*only implements 'torch'"),
    ("model.attn_config.alibi=false", r"model.attn_config.alibi=False"),
    ("model.attn_config.qk_ln=true", r"model.attn_config.qk_ln=True"),
    ("model.attn_config.attn_type=multiquery_attention", r"attn_type"),
    ("model.expansion_ratio=8", r"model.expansion_ratio=8.*4x MLP"),
    ("model.no_bias=false", r"model.no_bias=False"),
    ("model.logit_scale=2.0", r"model.logit_scale=2.0"),
    ("model.max_seq_len=64", r"model.max_seq_len=64.*ALiBi"),
    ("benchmark_name=a/b", r"benchmark_name='a/b'"),
])
def test_bad_value_names_key_and_value(override, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(TINY, [override])
    assert "\n" not in str(info.value)


def test_missing_model_block(tmp_path):
    path = tmp_path / "nomodel.yaml"
    path.write_text("benchmark_name: x\n")
    with pytest.raises(ConfigError, match="model"):
        load_config(str(path))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_cuda_requested_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="device='cuda'.*no CUDA"):
        check_environment(load_config(TINY, ["device=cuda"]))


def test_hf_model_path_must_exist():
    cfg = load_config(os.path.join(ROOT, "yamls", "compare-llama-7b.yaml"),
                      ["model.pretrained_model_name_or_path=./no/such/dir"])
    with pytest.raises(ConfigError, match="pretrained_model_name_or_path='./no/such/dir'.*no such local"):
        check_environment(cfg)


def test_hf_hub_id_unreachable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_config(os.path.join(ROOT, "yamls", "compare-llama-7b.yaml"),
                      ["model.pretrained_model_name_or_path=nobody-xyz/not-a-model"])
    with pytest.raises(ConfigError, match="neither a local directory nor reachable"):
        check_environment(cfg)


def test_llm_foundry_yaml_vocabulary_loads(tmp_path):
    """An llm-foundry benchmarking YAML (tokenizer block, tokenizer_name, ffn_config, variables) loads."""
    path = tmp_path / "old.yaml"
    path.write_text(textwrap.dedent("""
        benchmark_name: MosaicDeepspeed_1xA100-80GB-bf16-GPT-1B
        max_seq_len: 2048
        tokenizer_name: EleutherAI/gpt-neox-20b
        variables:
          layers: 24
        tokenizer:
          name: ${tokenizer_name}
          kwargs:
            model_max_length: ${max_seq_len}
        model:
          name: mpt_causal_lm
          init_device: cpu
          tokenizer_name: ${tokenizer_name}
          d_model: 2048
          n_heads: 16
          n_layers: ${variables.layers}
          max_seq_len: ${max_seq_len}
          vocab_size: 50368
          init_std: 0.02
          attn_pdrop: 0.0
          resid_pdrop: 0.0
          emb_pdrop: 0.0
          attn_config:
            attn_impl: torch
          ffn_config:
            expansion_ratio: 4
        device: null
        model_dtype: bf16
        autocast_dtype: null
        use_deepspeed: false
        batch_sizes: [1, 2, 4, 8, 16, 32, 64]
        input_lengths: [128]
        output_lengths: [8]
        use_cache: true
        num_batches: 5
        num_warmup_batches: 3
    """))
    cfg = load_config(str(path))
    assert cfg.model.n_layers == 24
    assert cfg.model.max_seq_len == 2048
    assert cfg.tokenizer["name"] == "EleutherAI/gpt-neox-20b"


def test_dotlist_overrides_apply():
    cfg = load_config(TINY, ["batch_sizes=[1,8]", "output_lengths=[64]"])
    assert cfg.batch_sizes == [1, 8] and cfg.output_lengths == [64]
