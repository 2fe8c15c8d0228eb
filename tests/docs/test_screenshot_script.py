"""docs/screenshot.py relies on the MLflow UI's own state keys; pin them against the UI bundle
that the installed MLflow serves, so an MLflow upgrade that renames them fails here instead
of silently giving an unsorted screenshot without metric columns."""

from __future__ import annotations

import importlib.util
import json
import re
import urllib.parse
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.py"


@pytest.fixture(scope="module")
def shot():
    spec = importlib.util.spec_from_file_location("crfm_docs_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ui_bundle() -> str:
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    files = sorted(js.glob("*.js"))
    assert files, f"no UI bundle under {js}"
    return "\n".join(p.read_text(errors="replace") for p in files)


def test_the_leaderboard_url_filters_model_runs_and_sorts_by_psnr_descending(shot):
    url = shot.leaderboard_url("http://127.0.0.1:5000", "7")
    path, _, query = url.partition("?")
    assert path == "http://127.0.0.1:5000/#/experiments/7/runs"
    q = dict(urllib.parse.parse_qsl(query))
    assert q == {
        "searchFilter": "tags.`crfm.kind` = 'model'",
        "orderByKey": "metrics.`psnr`",
        "orderByAsc": "false",
    }


def test_the_ui_reads_the_url_and_storage_keys_the_script_sets(shot, ui_bundle):
    # the experiment page's URL state: the keys it picks from the query string
    assert '["searchFilter","orderByKey","orderByAsc",' in ui_bundle
    # orderByAsc is parsed from the string "true"/"false"
    assert re.search(
        r'orderByAsc:\{serializeQueryString:[^}]*deserializeQueryString:\w+=>"true"===', ui_bundle
    )
    # the compare view's route and its query
    assert '"/compare-runs"' in ui_bundle and "?runs=${JSON.stringify(" in ui_bundle
    # local storage: the page state's key and fields, the assistant panel's flags
    assert re.search(
        r'\["MLflowLocalStorage",\w+\.version,this\.scope,\w+\]\.join\("-"\)', ui_bundle
    )
    assert 'reactComponentStateKey="ReactComponentState"' in ui_bundle
    storage = shot.ui_state("7")
    state = json.loads(storage['MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'])
    for field in ("selectedColumns", "autoRefreshEnabled", "orderByKey", "searchFilter"):
        assert field in state and field in ui_bundle
    for key in storage:  # stored as f"{key}_v{version}"
        if key.startswith("mlflow.assistant."):
            base, _, version = key.rpartition("_v")
            assert f'key:"{base}",version:{version}' in ui_bundle, key


def test_the_compare_url_lists_the_runs_as_json(shot):
    url = shot.compare_url("http://h", "3", ["a", "b"])
    query = dict(urllib.parse.parse_qsl(url.partition("?")[2]))
    assert json.loads(query["runs"]) == ["a", "b"] and json.loads(query["experiments"]) == ["3"]
