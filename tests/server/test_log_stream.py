"""print() inside a job's trace reaches its listener as `log` messages while the job runs (docs/protocol.md),
and every line also comes with the result, once."""


def test_print_lines_stream_as_log_messages_before_the_result(jupyter_host, graph_of):
    def body(model, tracer):
        with tracer.invoke("hello"):
            for _ in tracer.all():
                print("top", model.lm_head.output[0, -1].argmax())
            tracer.result.save()

    client = jupyter_host.socket("token-heidi")
    try:
        client.submit(graph_of(body, kind="generate", max_new_tokens=4))
        messages = [client.until(lambda m: m["type"] == "accepted")]
        while messages[-1]["type"] != "result":
            messages.append(client.recv())
            assert messages[-1].get("status") != "error", messages[-1].get("error")
    finally:
        client.close()
    kinds = [m["type"] for m in messages]
    logs = [i for i, kind in enumerate(kinds) if kind == "log"]
    progress = [i for i, kind in enumerate(kinds) if kind == "progress"]
    assert len(logs) == 4 and len(progress) == 4
    assert logs[0] < progress[-1]                  # sent as the generation ran, not with the result
    streamed = [[messages[i]["line"], messages[i]["text"]] for i in logs]
    assert messages[-1]["logs"] == streamed and all(text.startswith("top tensor(") for _, text in streamed)
