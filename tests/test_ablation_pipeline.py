"""pipelines/ablation: the root params.yaml with only the ablation's keys changed (so the
study measures the default benchmark's data, budget and evaluation, and the two never
drift), and settings that are the default setting plus image-domain 1x1x4."""

from __future__ import annotations

from pathlib import Path

import yaml
from dvc_support import flat

from crfm_bench.config import load_params
from crfm_bench.report.ablation import PARTS

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "ablation"

# what the study changes: which models, how many seeds, and the (default) entries of the
# ablations it adds to `models`
ABLATION_KEYS = {"benchmark.models", "train.seeds"} | {
    f"models.{name}.{k}"
    for name in PARTS
    if name != "crfm-noref"  # already in the root params.yaml
    for k in ("size", "lr", "epochs", "batch_size", "options")
}


def test_ablation_params_mirror_the_root_params():
    root = flat(load_params(ROOT / "params.yaml").model_dump(mode="json"))
    ours = load_params(PIPE / "params.yaml")
    abl = flat(ours.model_dump(mode="json"))
    changed = {k for k in root.keys() | abl.keys() if root.get(k) != abl.get(k)}
    assert changed <= ABLATION_KEYS, changed - ABLATION_KEYS
    assert ours.train.seeds == 3
    assert ours.benchmark.models == ["crfm", *PARTS]
    # every ablation configured exactly as crfm (same size and options: capacity-matched)
    crfm = ours.models["crfm"].model_dump(mode="json")
    for name in PARTS:
        assert ours.models[name].model_dump(mode="json") == crfm, name


def test_settings_are_the_default_and_image_1x1x4():
    settings = yaml.safe_load((PIPE / "settings.yaml").read_text())["settings"]
    params = load_params(PIPE / "params.yaml")
    assert set(settings) == {"kspace-2", "image-1x1x4"}
    for key, s in settings.items():
        # the name is the LR folder the degrade stage writes (data/lr/<domain>-<scale>)
        p = load_params(
            PIPE / "params.yaml", [f"task.domain={s['domain']}", f"task.scale={s['scale']}"]
        )
        assert key == f"{p.task.domain}-{p.task.scale}"
    default = settings["kspace-2"]
    assert (default["domain"], default["scale"]) == (params.task.domain, params.task.scale)
    assert settings["image-1x1x4"] == {"domain": "image", "scale": "1x1x4"}


def test_every_setting_gets_the_runs_and_the_page():
    stages = yaml.safe_load((PIPE / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["foreach"] == stages["ablation"]["foreach"] == "${settings}"
    for stage in ("train", "ablation"):
        cmd = stages[stage]["do"]["cmd"]
        assert "-S paths.runs_dir=runs/${key}" in cmd and "-S task.scale=${item.scale}" in cmd
    assert stages["ablation"]["do"]["cmd"].startswith("crfm-bench ablation")
    assert stages["train"]["do"]["outs"] == ["runs/${key}/models"]
