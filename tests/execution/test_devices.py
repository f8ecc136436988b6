"""execution.devices: what moves between devices on a sharded model (the meta device stands in for a
second device here: this machine has only the CPU)."""

import torch

from nnsight_jupyter.execution.devices import align, device_of, is_sharded, like, to_cpu, unhooked
from nnsight_jupyter.models.sharding import place

META = torch.device("meta")


def test_a_write_moves_to_the_device_of_what_it_replaces():
    current = (torch.zeros(2, 3, device=META), {"cache": None})
    moved = like([torch.ones(2, 3), 4], current)
    assert moved[0].device == META and moved[1] == 4
    assert device_of({"a": [None, torch.zeros(1, device=META)]}) == META


def test_mixed_arguments_run_on_the_first_ones_device():
    args, kwargs = align((torch.zeros(1, device=META), torch.ones(1)), {"other": torch.ones(1)})
    assert {a.device for a in args} == {META} and kwargs["other"].device == META
    same = (torch.ones(1), torch.ones(1))
    assert align(same, {})[0] is same


def test_saves_come_back_on_the_cpu():
    saved = to_cpu({"h": torch.ones(2), "rest": (torch.zeros(1), "x")})
    assert saved["h"].device.type == "cpu" and saved["rest"][1] == "x"


def test_unhooked_puts_accelerate_and_the_weights_back(raw_llama, tmp_path):
    assert not is_sharded(raw_llama)
    model = place(raw_llama, {"model": "cpu", "lm_head": "disk"}, offload_dir=str(tmp_path))
    forward = model.lm_head.__dict__["forward"]
    weight = model.lm_head._parameters["weight"]
    with unhooked(model):
        assert model.lm_head.weight.device.type == "cpu"
        assert model.lm_head.forward == model.lm_head._old_forward
    assert model.lm_head.__dict__["forward"] is forward and model.lm_head._parameters["weight"] is weight
    assert weight.device == META
