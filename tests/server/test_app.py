"""NNsightHost configuration: the models trait from a dict, JSON or Python text; clear errors."""

import pytest
from traitlets import TraitError

from nnsight_jupyter.server.app import NNsightHost


def test_models_from_json_text_with_null():
    app = NNsightHost()
    app.models = '{"smollm2": {"source": "bundled:smollm2-135m", "dtype": "float32", "device_map": null}}'
    spec = app.specs()["smollm2"]
    assert spec.source == "bundled:smollm2-135m" and spec.device_map is None


def test_models_from_python_text_and_plain_source():
    app = NNsightHost()
    app.models = "{'a': 'bundled:smollm2-135m'}"
    assert app.specs()["a"].source == "bundled:smollm2-135m"


def test_bad_models_and_backend_are_refused():
    app = NNsightHost()
    with pytest.raises(TraitError, match="must be a dict"):
        app.models = "not a dict at all"
    app.models = {"b": {"dtype": "float32"}}
    with pytest.raises(ValueError, match="needs a 'source'"):
        app.specs()
    with pytest.raises((TraitError, ValueError), match='"local" or "ray"'):
        app.backend = "spark"
