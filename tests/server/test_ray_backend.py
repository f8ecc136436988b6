"""The Ray Serve backend (`c.NNsightHost.backend = "ray"`, server/ray_backend.py): status, an
unreachable cluster, configuration, a replica killed mid-job and the deployment's recovery.
The host's other integration tests run on both backends (the `jupyter_host` fixture)."""

from __future__ import annotations

import os
import signal

import pytest

from nnsight_jupyter.server.app import NNsightHost
from nnsight_jupyter.server.launch import free_port


def _read(model, tracer):
    with tracer.invoke("the cat sat"):
        model.model.layers[1].output.save()


def test_status_names_the_backend_and_its_replicas(jupyter_host):
    worker = jupyter_host.get("nnsight/api/status")["models"]["tiny"]["worker"]
    assert worker["backend"] == jupyter_host.backend
    if jupyter_host.backend == "ray":
        assert worker["address"] == "local" and worker["error"] is None
        assert worker["replicas"].get("RUNNING") == 1, worker


@pytest.mark.ray
def test_an_unreachable_cluster_fails_the_model_clearly_at_start(make_host, backend_config, wait_until):
    backend_config("ray")
    address = f"127.0.0.1:{free_port()}"          # nothing listens there
    host = make_host(start=False, backend="ray", ray_address=address).start(wait_ready=False)

    def failed():
        try:
            model = host.get("nnsight/api/status")["models"]["tiny"]
        except OSError:
            return None
        return model if model["state"] == "failed" else None
    model = wait_until(failed, timeout=120, what="the model to be marked failed", ignore=(ValueError,))
    assert "cannot be reached" in model["error"] and address in model["error"]
    assert "ray_address" in model["error"]
    client = host.socket("token-alice")
    client.submit(b"\x00" * 16)
    refused = client.until(lambda m: m["type"] == "error")
    assert refused["code"] == "model_not_ready" and "cannot be reached" in refused["error"]["message"]


@pytest.mark.ray
def test_the_deployment_recovers_after_its_replica_is_killed(make_host, backend_config, graph_of, wait_until):
    host = make_host(**backend_config("ray"))
    first = host.get("nnsight/api/status")["models"]["tiny"]
    pid = first["worker_pid"]
    assert isinstance(pid, int) and pid > 1 and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)                  # idle: Serve replaces it by itself
    client = host.socket("token-alice")
    client.submit(graph_of(_read))
    job = client.until(lambda m: m["type"] == "accepted")["job_id"]
    done = client.until(lambda m: m.get("job_id") == job and (m["type"] == "result" or m.get("status") == "error"),
                        timeout=240)
    assert done["type"] == "result", done
    recovered = wait_until(lambda: (lambda m: m if m["worker"]["replicas"].get("RUNNING") == 1 else None)(
        host.get("nnsight/api/status")["models"]["tiny"]), timeout=240, what="a running replica again")
    assert recovered["state"] == "ready"


def test_the_ray_settings_come_from_the_host_configuration():
    app = NNsightHost()
    app.backend = "ray"
    app.ray_address = "head:6379"
    app.num_replicas, app.ray_actor_options = 3, {"num_cpus": 2}
    app.max_ongoing_requests, app.max_queued_requests = 1, 8
    app.models = {"m": {"source": "x", "num_replicas": 2}}
    factory = app.worker_factory()
    settings = factory.keywords["settings"]
    assert (settings.address, settings.num_replicas, settings.ray_actor_options) == ("head:6379", 3, {"num_cpus": 2})
    assert settings.max_ongoing_requests == 2          # room for a cancel beside the running batch
    assert settings.max_queued_requests == 8
    assert app.specs()["m"].extra["ray"] == {"num_replicas": 2}
    with pytest.raises(Exception, match='"local" or "ray"'):
        app.backend = "slurm"


class _Keep:
    """A runner that keeps the graph (as the client would send it)."""

    def run(self, graph, observer=None):
        from nnsight_jupyter.graph.result import Result

        self.graph = graph
        return Result()


def test_a_replica_streams_what_a_local_worker_sends(tiny_model_dir, tiny_local):
    """ModelReplica in Serve's local testing mode (in this process, no cluster): progress, then the
    same "done" report as the local worker's code, values equal to a local run."""
    serve = pytest.importorskip("ray.serve")
    from nnsight_jupyter.graph.codec import decode_values, encode
    from nnsight_jupyter.server.ray_backend import ModelReplica
    from nnsight_jupyter.server.worker import ModelSpec

    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), threads=1)
    handle = serve.run(serve.deployment(ModelReplica).bind(spec), name="nnsight-test", route_prefix=None,
                       _local_testing_mode=True)
    assert handle.describe.remote().result()["pid"] == os.getpid()
    keep = _Keep()
    with tiny_local.generate(max_new_tokens=3) as tracer:
        tracer.runner = keep
        with tracer.invoke("hello"):
            tracer.result.save()
    message = {"type": "batch", "batch_id": "b1",
               "jobs": [{"job_id": "j1", "graph": encode(keep.graph), "prepared": None, "solo": True}]}
    items = list(handle.options(stream=True).run.remote(message))
    assert [m["type"] for m in items] == ["progress"] * 3 + ["done"]
    report = items[-1]["jobs"]["j1"]
    assert report["ok"] and report["batch_id"] == "b1"
    with tiny_local.generate("hello", max_new_tokens=3) as tracer:
        local = tracer.result.save()
    assert next(iter(decode_values(report["payload"]).values())).equal(local.value)
    assert handle.cancel.remote("j1").result() is True
