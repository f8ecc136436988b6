"""model.scan(...) and hosted models: a hosted model has no code here, so scanning it is refused
clearly; the local twin of a hosted model scans, and its shapes are those the host computes."""

import pytest

import nnsight_jupyter as nj


def test_hosted_model_scan_is_refused_and_local_twin_matches_host(connect_as, tiny_local):
    model = connect_as("token-grace").model("tiny")
    with pytest.raises(nj.TracingError, match="lives on a host.*Scan a local copy"):
        model.scan("the cat sat on the mat")
    shapes = tiny_local.scan("the cat sat on the mat").shapes
    with model.trace("the cat sat on the mat"):
        h = model.model.layers[1].output.save()
        logits = model.lm_head.output.save()
    assert shapes["model.layers.1"] == h.value.shape and shapes["lm_head"] == logits.value.shape
