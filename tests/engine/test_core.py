"""The engine's core as parts, without Ray: train_step, validate, state I/O, the loop in a
LocalSession (fast: a tiny model on tiny synthetic cases, seconds in all)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crfm_bench.engine.build import base_lr, build_model, split_overrides
from crfm_bench.engine.data import PatchDataset
from crfm_bench.engine.loop import train_loop
from crfm_bench.engine.session import LocalSession, Session
from crfm_bench.engine.state import read_state, restore_state, save_state, training_state
from crfm_bench.engine.step import make_optimizer, psnr_batch, train_step, validate


def batch_of(cases, n=2, seed=0):
    ds = PatchDataset(cases, (2, 2, 2), 8, length=n, seed=seed)
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=n)))


def test_build_model_takes_options_but_never_lr(params):
    train, options = split_overrides({"lr": 0.1, "n_feats": 6})
    assert train == {"lr": 0.1} and options == {"n_feats": 6}
    model = build_model(params, "edsr", {"lr": 0.1, "n_feats": 6})
    assert model.name == "edsr"
    assert base_lr(params, "edsr", {"lr": 0.1}) == 0.1
    assert base_lr(params, "edsr") == params.train.lr


@pytest.mark.parametrize("name", ["edsr", "crfm"])
def test_train_step_lowers_the_loss_on_a_fixed_batch(params, cases, name):
    torch.manual_seed(0)
    model = build_model(params, name)
    opt = make_optimizer(model.parameters(), 1e-3)
    batch = batch_of(cases[0])
    losses = [train_step(model, opt, batch, lr=1e-3, grad_clip=1.0) for _ in range(8)]
    assert opt.param_groups[0]["lr"] == 1e-3
    assert losses[-1] < losses[0]


def test_fused_foreach_and_single_adam_give_the_same_update(params, cases):
    batch = batch_of(cases[0])
    out = {}
    for impl in ("fused", "foreach", "single"):
        torch.manual_seed(0)
        model = build_model(params, "edsr")
        opt = make_optimizer(model.parameters(), 1e-3, impl=impl)
        for _ in range(3):
            train_step(model, opt, batch, lr=1e-3)
        out[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(out["fused"], out["single"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["foreach"], out["single"], rtol=1e-5, atol=1e-6)


def test_validate_is_the_mean_patch_psnr_and_keeps_the_mode(params, cases):
    torch.manual_seed(0)
    model = build_model(params, "crfm").train()
    ds = PatchDataset(cases[1], (2, 2, 2), 8, length=3, seed=1)
    samples = [ds[i] for i in range(3)]
    got = validate(model, samples)
    assert model.training
    model.eval()
    with torch.no_grad():
        want = np.mean(
            [psnr_batch(model(s["lr"][None], s["ref"][None]), s["hr"][None]) for s in samples]
        )
    assert got == pytest.approx(want, rel=1e-6)
    # batched: the same per-patch PSNRs (3 patches in a batch of 2 and a batch of 1)
    assert validate(model, samples, batch_size=2) == pytest.approx(want, rel=1e-5)


def test_state_round_trip_restores_model_optimizer_and_position(params, cases, tmp_path):
    torch.manual_seed(0)
    model = build_model(params, "edsr")
    opt = make_optimizer(model.parameters(), 1e-3)
    train_step(model, opt, batch_of(cases[0]), lr=1e-3)
    save_state(training_state(model, opt, epoch=4, step=9, model_name="edsr"), tmp_path)
    torch.manual_seed(1)
    other = build_model(params, "edsr")
    other_opt = make_optimizer(other.parameters(), 1e-3)
    assert restore_state(read_state(tmp_path), other, other_opt) == (5, 9)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert restore_state(None, other, other_opt) == (0, 0)


def test_loop_reports_once_per_epoch_with_a_state(params, cases, loop_config):
    session = LocalSession()
    assert isinstance(session, Session)
    train_loop(loop_config(params, cases), session)
    assert [r["epoch"] for r in session.reports] == [0, 1, 2]
    assert [r["step"] for r in session.reports] == [2, 4, 6]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_psnr"]) for r in session.reports)
    assert session.last_state["epoch"] == 2 and session.last_state["seed"] == params.train.seed


def test_interrupted_loop_resumes_to_the_same_weights(params, cases, tmp_path, loop_config):
    whole = LocalSession()
    train_loop(loop_config(params, cases), whole)

    class Stop(Exception):
        pass

    def stop_after_epoch_1(metrics):
        if metrics["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_loop(loop_config(params, cases), LocalSession(tmp_path, [stop_after_epoch_1]))
    resumed = LocalSession(tmp_path)
    train_loop(loop_config(params, cases), resumed)
    assert [r["epoch"] for r in resumed.reports] == [2]
    assert resumed.reports[0]["resumed_from"] == 2
    for k, v in whole.last_state["model"].items():
        torch.testing.assert_close(resumed.last_state["model"][k], v, rtol=0, atol=0)


def test_training_seed_changes_the_weights_not_the_validation_patches(params, cases, loop_config):
    a, b = LocalSession(), LocalSession()
    train_loop(loop_config(params, cases, epochs=1), a)
    train_loop(loop_config(params, cases, epochs=1, seed=params.train.seed + 1), b)
    assert b.last_state["seed"] == params.train.seed + 1
    w_a, w_b = a.last_state["model"], b.last_state["model"]
    assert any(not torch.equal(w_a[k], w_b[k]) for k in w_a)


@pytest.mark.parametrize(
    ("mode", "compute"), [("off", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_mixed_precision_reaches_the_step_through_the_loop(
    params, cases, loop_config, mode, compute
):
    """``train.mixed_precision``: bf16 and fp16 (with its gradient scaler) run the step's
    autocast, the paths CUDA takes, on the CPU; the convolutions compute in the low
    precision, the loss and the reports stay finite, the weights and their state stay
    float32. ``off`` computes in float32 throughout."""
    p = params.model_copy(deep=True)
    p.train.mixed_precision = mode
    seen: set[torch.dtype] = set()

    def conv_output(module, _inputs, output):
        if isinstance(module, torch.nn.Conv3d):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(conv_output)
    try:
        session = LocalSession()
        train_loop(loop_config(p, cases, epochs=1), session)
    finally:
        handle.remove()
    assert compute in seen and (mode != "off" or seen == {torch.float32}), seen
    report = session.reports[-1]
    assert np.isfinite(report["train_loss"]) and np.isfinite(report["val_psnr"])
    weights = session.last_state["model"].values()
    assert all(w.dtype == torch.float32 for w in weights if w.is_floating_point())
