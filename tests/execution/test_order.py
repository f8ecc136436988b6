"""Execution order: recorded with fake tensors (no compute) equals a real forward's."""

import torch

from nnsight_jupyter.execution.order import record_order_during, record_order_fake
from nnsight_jupyter.graph.order import ExecutionOrder


def test_fake_recording_equals_real(raw_llama):
    ids = torch.tensor([[3, 4, 5]])
    fake = record_order_fake(raw_llama, {"input_ids": ids})
    with record_order_during(raw_llama) as events, torch.no_grad():
        raw_llama(input_ids=ids)
    assert fake.events == events and fake.lengths == events.lengths
    assert fake.lengths[("model.layers.0.self_attn", 0, "output")] == 2
    assert fake.calls["model.layers.3"] == 1
    assert ExecutionOrder.from_json(fake.to_json()).events == fake.events
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in raw_llama.modules()) == 0


def test_fake_recording_does_no_real_compute(raw_llama):
    calls = []
    handle = raw_llama.lm_head.register_forward_hook(lambda m, a, o: calls.append(type(o).__name__))
    record_order_fake(raw_llama, {"input_ids": torch.tensor([[1, 2]])})
    handle.remove()
    assert calls == ["FakeTensor"]


def test_plain_module_without_fake_support_records_from_a_real_forward():
    import nnsight_jupyter as nj

    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            scale = float(x.abs().max().item())        # .item() has no fake value
            return self.lin(x) * scale

    net = DataDependent()
    wrapped = nj.NNsight(net)
    x = torch.randn(2, 3)
    with wrapped.trace(x):
        out = wrapped.lin.output.save()
    with torch.no_grad():
        torch.testing.assert_close(out.value, net.lin(x))
    assert wrapped._target.order.calls == {"lin": 1, "": 1}
