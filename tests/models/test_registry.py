from __future__ import annotations

import pandas as pd
import pytest
import torch

from crfm_bench.errors import InputError
from crfm_bench.models import SRModel, create_model, list_models, model_info, model_table

EXPECTED = {
    "trilinear", "tricubic", "zerofill", "edsr", "rcan", "minet",
    "crfm", "crfm-noref", "crfm-nograd", "crfm-nofmp", "crfm-fmp-xscale", "crfm-fmp-xmod",
    "edsr-fmp",
}  # fmt: skip


def test_every_model_of_the_brief_is_registered() -> None:
    assert set(list_models()) == EXPECTED
    assert list_models() == sorted(EXPECTED)


def test_list_models_filters_by_shell_pattern() -> None:
    assert list_models("crfm*") == [
        "crfm", "crfm-fmp-xmod", "crfm-fmp-xscale", "crfm-nofmp", "crfm-nograd", "crfm-noref"
    ]  # fmt: skip
    assert list_models("nothing*") == []


def test_unknown_model_is_an_input_error_listing_known_names() -> None:
    with pytest.raises(InputError, match=r"model 'foo': unknown model; known: crfm, crfm-fmp-xmod"):
        create_model("foo")
    with pytest.raises(InputError, match="unknown model"):
        model_info("foo")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registration_agrees_with_the_built_model(name: str) -> None:
    info = model_info(name)
    model = create_model(name, spatial_dims=2, scale=2)
    assert isinstance(model, SRModel)
    assert model.name == name
    assert model.needs_reference is info.needs_reference
    assert model.trainable is info.trainable
    assert (model.num_parameters() > 0) is info.trainable
    assert info.description and info.citation


def test_crfm_citation_names_the_paper_and_says_reconstruction() -> None:
    import crfm_bench.models.crfm as crfm_module

    assert "10.1007/s10278-024-01139-1" in model_info("crfm").citation
    doc = crfm_module.__doc__ or ""
    assert "10.1007/s10278-024-01139-1" in doc
    assert "reconstruction" in doc and "No public code exists" in doc


@pytest.mark.parametrize(
    ("scale", "expected"), [(2, (2, 2, 2)), ("1x1x4", (1, 1, 4)), ((1, 1, 4), (1, 1, 4))]
)
def test_scale_accepts_every_parse_scale_form(scale: object, expected: tuple[int, ...]) -> None:
    assert create_model("edsr", 3, scale).scale == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 1}, "scale"),
        ({"scale": 1.5}, "scale"),
        ({"scale": "2x2"}, "scale"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"size": "huge"}, "size 'huge'"),
        ({"n_feets": 8}, "unknown option 'n_feets'"),
        ({"n_feats": 0}, "n_feats=0"),
        ({"n_feats": "8"}, "n_feats='8'"),
        ({"res_scale": -1.0}, "res_scale=-1.0"),
    ],
)
def test_bad_arguments_are_one_line_input_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        create_model("edsr", **kwargs)
    assert "\n" not in str(err.value)


def test_crfm_rejects_an_odd_window_and_indivisible_heads() -> None:
    with pytest.raises(InputError, match="window=5"):
        create_model("crfm", window=5)
    with pytest.raises(InputError, match="heads=3"):
        create_model("crfm", heads=3)


def test_interpolators_take_no_options() -> None:
    with pytest.raises(InputError, match=r"model 'tricubic': unknown option 'n_feats'"):
        create_model("tricubic", n_feats=4)


def test_overrides_and_sizes_change_the_network() -> None:
    tiny = create_model("edsr", 3, 2).num_parameters()
    wider = create_model("edsr", 3, 2, n_feats=32).num_parameters()
    base = create_model("edsr", 3, 2, size="base").num_parameters()
    assert tiny < wider < base


def test_model_table_has_one_row_per_model() -> None:
    table = model_table(spatial_dims=2, scale=2)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "name", "family", "size", "params", "params_tiny", "params_base", "params_paper",
        "residual", "loss", "needs_reference", "trainable", "spatial_dims", "description",
    ]  # fmt: skip
    assert set(table["name"]) == EXPECTED
    row = table.set_index("name").loc["edsr"]
    assert row["params"] == create_model("edsr", 2, 2).num_parameters()
    assert "Lim et al." in row["description"]
    assert (table["spatial_dims"] == 2).all()
    assert not table.set_index("name").loc["tricubic", "trainable"]


def test_reference_model_without_ref_is_an_input_error() -> None:
    model = create_model("crfm", spatial_dims=2, scale=2)
    with pytest.raises(InputError, match=r"^model 'crfm' needs a reference image$"):
        model(torch.rand(1, 1, 8, 8))


def test_wrong_shapes_are_input_errors() -> None:
    model = create_model("crfm", spatial_dims=2, scale=2)
    with pytest.raises(InputError, match="ref has shape"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(InputError, match="lr has shape"):
        model(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 16, 16, 16))


def test_reference_free_models_ignore_ref() -> None:
    model = create_model("edsr", spatial_dims=2, scale=2)
    lr = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(model(lr), model(lr, torch.rand(1, 1, 16, 16)))


LEARNED = sorted(n for n in EXPECTED if model_info(n).trainable)


@pytest.mark.parametrize("name", LEARNED)
def test_every_learned_model_gets_the_same_global_residual_switch(name: str) -> None:
    # One default for all learned models; "none" leaves the network's own output, and
    # "tricubic" adds exactly the origin-aligned tricubic image of the LR input.
    from crfm_bench.models.interpolate import origin_aligned_upsample
    from crfm_bench.models.registry import DEFAULT_RESIDUAL

    torch.manual_seed(0)
    plain = create_model(name, spatial_dims=2, scale=2, residual="none").eval()
    torch.manual_seed(0)
    skip = create_model(name, spatial_dims=2, scale=2).eval()
    assert skip.residual == DEFAULT_RESIDUAL == "tricubic"
    assert plain.residual == "none"
    lr = torch.rand(1, 1, 8, 8)
    ref = torch.rand(1, 1, 16, 16) if plain.needs_reference else None
    with torch.no_grad():
        torch.testing.assert_close(
            skip(lr, ref), plain(lr, ref) + origin_aligned_upsample(lr, (2, 2), "cubic")
        )


def test_residual_switch_rejects_unknown_values_and_training_free_models() -> None:
    with pytest.raises(InputError, match=r"model 'edsr': residual 'bilinear' is not one of"):
        create_model("edsr", residual="bilinear")
    with pytest.raises(InputError, match=r"model 'tricubic': option residual='tricubic'"):
        create_model("tricubic", residual="tricubic")
    assert create_model("zerofill").residual == "none"
