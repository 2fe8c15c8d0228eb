"""The fair default benchmark (issue 9): one residual switch reaching the run key, the
default model list, zerofill on k-space tasks only, and the size of the test split."""

from __future__ import annotations

from pathlib import Path

import pytest

from crfm_bench.config import DEFAULT_MODELS, load_params
from crfm_bench.errors import InputError
from crfm_bench.models import model_info
from crfm_bench.models.registry import applicable_models

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_lists_the_fair_default_benchmark_with_a_section_each() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.benchmark.models == list(DEFAULT_MODELS)
    assert {"crfm", "minet", "crfm-noref", "edsr", "tricubic", "zerofill"} <= set(
        params.benchmark.models
    )
    assert set(params.benchmark.models) <= set(params.models)
    assert params.benchmark.residual == "tricubic"
    # a reference-guided baseline and a reference-free control besides crfm
    assert model_info("minet").needs_reference and not model_info("crfm-noref").needs_reference


def test_default_test_split_has_at_least_ten_subjects_and_training_is_unchanged() -> None:
    synth = load_params(ROOT / "params.yaml").synth
    assert synth.n_test >= 10
    assert synth.n_subjects - synth.n_val - synth.n_test == 10  # training subjects as before
    assert synth.n_val == 3


def test_benchmark_residual_reaches_every_learned_model_and_per_model_overrides_win() -> None:
    params = load_params(
        ROOT / "params.yaml",
        ["benchmark.residual=none", "models.edsr.options={residual: tricubic}"],
    )
    from crfm_bench.engine.build import build_model, model_options

    assert model_options(params, "crfm")["residual"] == "none"
    assert model_options(params, "minet")["residual"] == "none"
    assert model_options(params, "edsr")["residual"] == "tricubic"
    # training-free models have no residual, whatever the benchmark says
    assert "residual" not in model_options(params, "tricubic")
    assert build_model(params, "crfm").residual == "none"
    # the stored section is not rewritten
    assert "residual" not in params.models["crfm"].options


def test_a_bad_residual_is_one_line_naming_the_key() -> None:
    with pytest.raises(InputError, match=r"benchmark\.residual"):
        load_params(None, ["benchmark.residual=bicubic"])


def test_the_residual_enters_the_run_key() -> None:
    from crfm_bench.engine.run import Setting, model_payload
    from crfm_bench.tracking import run_key

    setting = Setting(None, "0", "exp", "data-v", "lr-v", "spec")
    keys = {
        residual: run_key(
            model_payload(load_params(None, [f"benchmark.residual={residual}"]), "edsr", setting)
        )
        for residual in ("tricubic", "none")
    }
    assert keys["tricubic"] != keys["none"]
    same = load_params(None, ["benchmark.residual=none", "models.edsr.options={residual: none}"])
    assert run_key(model_payload(same, "edsr", setting)) == keys["none"]


def test_zerofill_is_a_kspace_baseline_only() -> None:
    names = list(DEFAULT_MODELS)
    assert applicable_models(names, "kspace") == (names, [])
    kept, dropped = applicable_models(names, "image")
    assert dropped == ["zerofill"] and kept == [n for n in names if n != "zerofill"]


def test_explicit_zerofill_on_an_image_task_is_refused() -> None:
    from crfm_bench.engine.run import validate_models

    image = load_params(None, ["task.domain=image"])
    with pytest.raises(InputError, match=r"model 'zerofill' is a baseline of kspace .*image"):
        validate_models(["zerofill"], image)
    assert validate_models(["zerofill", "tricubic"], load_params(None)) == ["zerofill", "tricubic"]


def test_paper_size_is_a_valid_model_setting() -> None:
    params = load_params(None, ["models.rcan.size=paper"])
    assert params.model_config_for("rcan").size == "paper"
    with pytest.raises(InputError, match=r"models\.rcan\.size"):
        load_params(None, ["models.rcan.size=huge"])


def test_the_training_worker_builds_models_with_the_benchmark_residual() -> None:
    # what a Ray Train worker does with the params it receives (engine.loop.build_model)
    from crfm_bench.config import Params
    from crfm_bench.engine.build import build_model

    params = load_params(ROOT / "params.yaml", ["benchmark.residual=none"])
    tree = params.model_dump(mode="json")  # what the worker receives, validated again there
    assert build_model(Params.model_validate(tree), "edsr").residual == "none"
    assert build_model(Params.model_validate(tree), "minet", {"n_feats": 8}).residual == "none"
    default = load_params(ROOT / "params.yaml")
    assert build_model(default, "crfm-noref").residual == "tricubic"
    assert build_model(default, "zerofill").residual == "none"


def test_default_evaluation_plan_computes_at_most_1_3_times_the_volume() -> None:
    # Sliding-window cost follows the LR voxels the model computes. At the default window and
    # eval.batch_size, the default test volume is one call, and 1-mm-class volumes (IXI- and
    # BraTS-like LR grids at x2) stay within 1.3x their voxels.
    import numpy as np

    from crfm_bench.engine.inference import plan_windows

    params = load_params(ROOT / "params.yaml")
    e = params.eval
    for lr_shape, bound in (((40, 48, 42), 1.0), ((90, 108, 90), 1.3), ((100, 128, 75), 1.3)):
        plan = plan_windows(lr_shape, (2, 2, 2), e.window, e.overlap, e.batch_size)
        ratio = len(plan.corners) * np.prod(plan.window) / np.prod(lr_shape)
        assert ratio <= bound, (lr_shape, plan.window, ratio)
