"""params.yaml schema: defaults, overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from crfm_bench.config import Params, load_params
from crfm_bench.errors import InputError, MissingInputError
from crfm_bench.scale import format_scale, parse_scale

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_yaml_is_valid_and_complete():
    p = load_params(ROOT / "params.yaml")
    # every key of the schema is spelled out in params.yaml (no hidden defaults)
    import yaml

    tree = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(d, prefix=""):
        for k, v in d.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")

    schema = set(keys(Params().model_dump(mode="json")))
    assert schema <= set(keys(tree)), sorted(schema - set(keys(tree)))
    assert p.degrade.scales == ["2", "1x1x4"]


def test_overrides_use_dvc_spelling_and_yaml_values(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("synth:\n  n_subjects: 8\n")
    p = load_params(f, ["synth.spacing_mm=3", "degrade.scales=[4, 1x1x2]", "synth.snr=null"])
    assert p.synth.n_subjects == 8 and p.synth.spacing_mm == 3.0
    assert p.degrade.scales == ["4", "1x1x2"] and p.synth.snr is None


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("synth: [1, 2\n", [], "malformed YAML"),
        ("synth:\n  n_subjectz: 3\n", [], "synth.n_subjectz: unknown key"),
        ("", ["synth.spacing_mm=-1"], "synth.spacing_mm"),
        ("", ["degrade.scales=[0]"], "degrade.scales"),
        ("", ["degrade.scales=[1.5]"], "1.5"),
        ("", ["degrade.domains=[fourier]"], "degrade.domains"),
        ("", ["synth.n_val=10", "synth.n_test=10"], "n_val + n_test"),
        ("- a list\n", [], "top level"),
        ("", ["nonsense"], "key.path=value"),
    ],
)
def test_bad_params_name_the_key(tmp_path, text, overrides, needle):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_params(f, overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(MissingInputError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, (2, 2, 2)),
        ("4", (4, 4, 4)),
        ("1x1x4", (1, 1, 4)),
        ([1, 2, 2], (1, 2, 2)),
        (2.0, (2, 2, 2)),
    ],
)
def test_parse_scale(value, expected):
    assert parse_scale(value) == expected


@pytest.mark.parametrize("value", [0, 1, 1.5, "1x1", "2x2x2x2", "ax2", -2, True, None])
def test_parse_scale_rejects(value):
    with pytest.raises(InputError, match="scale"):
        parse_scale(value)


def test_format_scale_round_trip():
    for s in [(2, 2, 2), (1, 1, 4), (2, 2, 1)]:
        assert parse_scale(format_scale(s)) == s
