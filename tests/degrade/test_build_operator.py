"""build_operator: params.degrade -> operator; describe() records every parameter."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crfm_bench.config import DegradeConfig, ImageConfig, KSpaceConfig
from crfm_bench.degrade import ImageDegradation, KSpaceDegradation, build_operator
from crfm_bench.errors import InputError


def test_builds_each_domain_with_the_config_knobs() -> None:
    cfg = DegradeConfig(
        kspace=KSpaceConfig(window="tukey", tukey_alpha=0.5, snr=25.0),
        image=ImageConfig(blur="slice_profile", fwhm_factor=1.2),
    )
    k = build_operator("kspace", "1x1x4", cfg)
    assert k == KSpaceDegradation((1, 1, 4), window="tukey", tukey_alpha=0.5, snr=25.0)
    i = build_operator("image", 2, cfg)
    assert i == ImageDegradation((2, 2, 2), blur="slice_profile", fwhm_factor=1.2)
    assert build_operator("kspace", (3, 3, 3)).scale == (3, 3, 3)  # default config


@pytest.mark.parametrize(
    "op",
    [
        KSpaceDegradation(2, window="hann", snr=10.0),
        ImageDegradation((1, 1, 4)),
        ImageDegradation(3, blur="slice_profile"),
    ],
)
def test_describe_holds_every_field_and_is_json(op) -> None:
    described = json.loads(json.dumps(op.describe()))
    assert described["domain"] == op.domain
    for field in dataclasses.fields(op):
        value = getattr(op, field.name)
        assert described[field.name] == (list(value) if isinstance(value, tuple) else value)


def test_unknown_domain_or_bad_scale_is_a_one_line_input_error() -> None:
    with pytest.raises(InputError, match="'wavelet'") as err:
        build_operator("wavelet", 2)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"1\.5"):
        build_operator("image", "1.5")
    with pytest.raises(InputError, match="does not reduce"):
        build_operator("kspace", "1x1x1")
