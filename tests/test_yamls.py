"""Every shipped YAML loads; the big ones are built on the meta device to check their shapes."""
import glob
import os

import pytest
import torch

from conftest import ROOT
from llmbench.config import check_environment, load_config
from llmbench.models import build_hf_config, check_model_fits

YAMLS = sorted(glob.glob(os.path.join(ROOT, "yamls", "*.yaml")))
# Parameter counts of the public models these shapes copy (billions, +-2%).
EXPECTED_BILLIONS = {"1b.yaml": 1.31, "7b.yaml": 6.65, "30b.yaml": 29.96, "compare-mpt-7b.yaml": 6.65,
                     "7b_tp.yaml": 6.65, "30b_tp.yaml": 29.96,
                     "compare-llama-7b.yaml": 6.74, "compare-falcon-7b.yaml": 6.92}


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_yaml_loads(path):
    cfg = load_config(path)
    if cfg.device and cfg.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    check_environment(cfg)
    check_model_fits(build_hf_config(cfg.model, cfg.max_seq_len), cfg)


@pytest.mark.parametrize("name", sorted(EXPECTED_BILLIONS))
def test_big_shapes_on_meta_device(name):
    from transformers import AutoModelForCausalLM

    cfg = load_config(os.path.join(ROOT, "yamls", name))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(build_hf_config(cfg.model, cfg.max_seq_len), dtype=torch.bfloat16)
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(EXPECTED_BILLIONS[name], rel=0.02)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
