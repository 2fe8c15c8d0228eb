"""The check that a training worker group fits the local Ray before any work starts."""

from __future__ import annotations

import pytest

from crfm_bench.cluster import check_worker_group_fits, worker_group
from crfm_bench.config import Params
from crfm_bench.errors import InputError


def params(**train) -> Params:
    return Params.model_validate({"ray": {"num_cpus": 4}, "train": train})


def test_concurrent_trials_are_capped_by_what_fits():
    p = params(num_workers=2, cpus_per_worker=1)
    assert worker_group(p.train) == {"CPU": 2.0}
    assert check_worker_group_fits(p, concurrent=3) == 2
    assert check_worker_group_fits(p, concurrent=1) == 1
    assert check_worker_group_fits(params(num_workers=1, cpus_per_worker=4), concurrent=2) == 1


def test_a_group_larger_than_the_local_ray_is_one_clear_error():
    with pytest.raises(InputError, match=r"needs 6 CPU, the local Ray has 4 CPU"):
        check_worker_group_fits(params(num_workers=3, cpus_per_worker=2))


def test_gpu_workers_need_gpus():
    import torch

    p = params(num_workers=1, cpus_per_worker=1, use_gpu=True)
    if torch.cuda.device_count() >= 1:
        assert check_worker_group_fits(p) == 1
    else:
        with pytest.raises(InputError, match=r"\(use_gpu\).*1 GPU.*0 GPU"):
            check_worker_group_fits(p)


def test_a_cluster_is_left_to_its_autoscaler(monkeypatch):
    p = params(num_workers=64, cpus_per_worker=8)
    assert check_worker_group_fits(p, address="ray://head:10001", concurrent=2) == 2
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert check_worker_group_fits(p, concurrent=1) == 1
