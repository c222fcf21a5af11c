"""Every run YAML in mcli/ parses with mosaicml-cli's own RunConfig, then passes the checks mcli
does not make: GPU count matches the launcher, and the benchmark YAML it names exists and loads.

mosaicml-cli pins rich<14 (requirements.txt pins 15), so it is installed into its own folder under
pytest's cache and run in a subprocess with that folder first on PYTHONPATH."""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from llmbench.config import load_config

MCLI_YAMLS = sorted(glob.glob(os.path.join(ROOT, "mcli", "*.yaml")))
PARSE = """
import json, sys, warnings
warnings.simplefilter("error")  # mcli only warns about unknown fields: make them fail
from mcli import RunConfig
from mcli.models.run_config import FinalRunConfig
config = RunConfig.from_file(sys.argv[1])
final = FinalRunConfig.finalize_config(config)  # checks the image name
final.to_create_run_api_input()  # translates integrations (each needs integration_type)
print(json.dumps({"name": config.name, "image": config.image, "compute": dict(config.compute),
                  "integrations": config.integrations, "command": config.command}))
"""


@pytest.fixture(scope="session")
def mcli_site(request):
    """A folder holding mosaicml-cli and its dependencies (installed once, then cached)."""
    with open(os.path.join(ROOT, "mcli", "requirements.txt")) as f:
        pin = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    site = str(request.config.cache.mkdir("mcli-site-" + "-".join(pin).replace("=", "")))
    if not os.path.exists(os.path.join(site, "mcli", "__init__.py")):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", site, *pin],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"could not install {pin}: {proc.stderr[-2000:]}"
    return site


def test_there_are_run_yamls():
    names = {os.path.basename(p) for p in MCLI_YAMLS}
    assert {"7b.yaml", "30b_tp.yaml"} <= names


@pytest.mark.parametrize("path", MCLI_YAMLS, ids=os.path.basename)
def test_mcli_run_yaml(path, mcli_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": mcli_site, "HOME": str(tmp_path)}  # no credentials needed
    proc = subprocess.run([sys.executable, "-c", PARSE, path], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["name"] and run["image"]
    gpus = run["compute"].get("gpus")
    assert isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0, f"compute.gpus={gpus!r}"
    repos = [i for i in run["integrations"] if i.get("integration_type") == "git_repo"]
    assert repos and repos[0]["git_repo"] and "requirements.txt" in repos[0].get("pip_install", "")
    lines = [line for line in run["command"].splitlines() if "benchmark.py" in line]
    assert len(lines) == 1, run["command"]
    args = shlex.split(lines[0])
    launcher_gpus = re.search(r"--num_gpus[ =](\d+)", lines[0])
    assert gpus == (int(launcher_gpus.group(1)) if launcher_gpus else 1), \
        f"compute.gpus={gpus} but the command launches {launcher_gpus.group(1) if launcher_gpus else 1} process(es)"
    script = args.index("benchmark.py")
    yaml_path, overrides = args[script + 1], args[script + 2:]
    assert yaml_path.startswith("yamls/") and os.path.isfile(os.path.join(ROOT, yaml_path)), yaml_path
    cfg = load_config(os.path.join(ROOT, yaml_path), overrides)
    if launcher_gpus:
        assert cfg.use_deepspeed and cfg.deepspeed.tp_size in (None, gpus)
