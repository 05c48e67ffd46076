"""The ``http`` rewriter against a stub OpenAI-compatible server on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import small_recipe

import mbdata
from mbdata.recipe import RewriterSpec, recipe_from_dict
from mbdata.rewriters import InstructionRewriter
from mbdata.rewriters.check import syntactic_ok


class Stub:
    """A chat-completions server whose answers are a function of the prompt.

    ``fail_first``: answer HTTP 500 to that many requests first. ``bad_greedy``: inputs containing
    this text get an invalid (unchanged) rewrite at temperature 0 and a valid one when sampled.
    ``never``: inputs containing this text never get a valid rewrite."""

    def __init__(self, fail_first=0, bad_greedy=None, never=None, status=None):
        self.fail_first, self.bad_greedy, self.never, self.status = (
            fail_first,
            bad_greedy,
            never,
            status,
        )
        self.requests, self.failed, self.in_flight, self.max_in_flight = [], 0, 0, 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    fail = stub.failed < stub.fail_first
                    stub.failed += fail
                    stub.requests.append(
                        {**body, "path": self.path, "auth": self.headers.get("Authorization")}
                    )
                time.sleep(0.02)
                with stub.lock:
                    stub.in_flight -= 1
                if stub.status or fail:
                    self.send_response(stub.status or 500)
                    self.end_headers()
                    return
                prompt = body["messages"][0]["content"]
                text = prompt.rsplit("Instruction: ", 1)[-1]
                answer = f'"When you are ready, {text[0].lower()}{text[1:]}"'
                if (stub.never and stub.never in text) or (
                    stub.bad_greedy and stub.bad_greedy in text and body["temperature"] == 0
                ):
                    answer = text
                data = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": answer}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers = []

    def start(**kwargs):
        servers.append(Stub(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


def rewriter(tmp_path, url, **kw):
    spec = RewriterSpec(
        backend="http",
        url=url,
        model="stub-model",
        backoff=0.01,
        cache=str(tmp_path / "cache.jsonl"),
        **kw,
    )
    return InstructionRewriter("syntactic", spec, tmp_path, "attacks[0].rewriter")


def test_batches_run_concurrently_within_the_limit_and_keep_order(tmp_path, stub):
    server = stub()
    texts = [f"Add {i} and {i + 1}." for i in range(10)]
    out = rewriter(tmp_path, server.url, concurrency=3, batch_size=5).rewrite_all(texts)
    assert out == [f"When you are ready, add {i} and {i + 1}." for i in range(10)]
    assert len(server.requests) == 10 and 1 < server.max_in_flight <= 3
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["model"] for r in server.requests} == {"stub-model"}
    assert all(r["temperature"] == 0.0 and r["auth"] is None for r in server.requests)
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["backend"] == "http"


def test_duplicate_inputs_are_asked_once(tmp_path, stub):
    server = stub()
    out = rewriter(tmp_path, server.url).rewrite_all(["Add 1 and 2."] * 4)
    assert len(set(out)) == 1 and len(server.requests) == 1


def test_500s_are_retried_with_backoff(tmp_path, stub):
    server = stub(fail_first=2)
    out = rewriter(tmp_path, server.url, concurrency=1, retries=3).rewrite_all(["Add 1 and 2."])
    assert out == ["When you are ready, add 1 and 2."] and len(server.requests) == 3


def test_a_4xx_stops_at_once_with_one_line(tmp_path, stub):
    server = stub(status=401)
    with pytest.raises(mbdata.MBError) as exc:
        rewriter(tmp_path, server.url, retries=3).rewrite_all(["Add 1 and 2."])
    assert "answered HTTP 401" in str(exc.value) and "\n" not in str(exc.value)
    assert len(server.requests) == 1


def test_api_key_comes_from_the_named_environment_variable(tmp_path, stub, monkeypatch):
    server = stub()
    monkeypatch.setenv("STUB_KEY", "sk-test")
    rewriter(tmp_path, server.url, api_key_env="STUB_KEY").rewrite_all(["Add 1 and 2."])
    assert server.requests[0]["auth"] == "Bearer sk-test"
    monkeypatch.delenv("STUB_KEY")
    with pytest.raises(mbdata.MBError, match="STUB_KEY is not set"):
        rewriter(tmp_path, server.url, api_key_env="STUB_KEY").rewrite_all(["Add 2 and 3."])


def test_failed_checks_are_retried_by_sampling_then_dropped(tmp_path, stub):
    server = stub(bad_greedy="retry me", never="hopeless")
    texts = ["Add 1 and 2.", "Please retry me now.", "A hopeless case here."]
    out = rewriter(tmp_path, server.url, attempts=3).rewrite_all(texts)
    assert out[0] == "When you are ready, add 1 and 2."
    assert out[1] == "When you are ready, please retry me now." and syntactic_ok(out[1])
    assert out[2] is None
    temps = [
        (r["messages"][0]["content"].rsplit(": ", 1)[-1], r["temperature"], r["seed"])
        for r in server.requests
    ]
    assert sorted(t for t in temps if t[0].startswith("A hopeless")) == [
        ("A hopeless case here.", 0.0, 0),
        ("A hopeless case here.", 0.7, 1),
        ("A hopeless case here.", 0.7, 2),
    ]


def test_endpoint_down_and_nothing_cached_is_one_clear_line(tmp_path):
    url = closed_port_url()
    with pytest.raises(mbdata.MBError) as exc:
        rewriter(tmp_path, url, retries=1).rewrite_all(["Add 1 and 2.", "Add 3 and 4."])
    msg = str(exc.value)
    assert "\n" not in msg and f"{url}/chat/completions unreachable after 2 tries" in msg
    assert "2 of 2 rewrites are not in the cache" in msg and "attacks[0].rewriter" in msg


def _http_recipe(url, tmp_path, **rewriter):
    return small_recipe(
        attacks=[
            {
                "preset": "syntactic",
                "rate": 0.1,
                "rewriter": {
                    "backend": "http",
                    "url": url,
                    "model": "stub-model",
                    "backoff": 0.01,
                    "retries": 1,
                    "cache": "rw-cache.jsonl",
                    **rewriter,
                },
            }
        ]
    )


def test_build_through_the_endpoint_then_rebuild_offline_from_the_cache(tmp_path, stub):
    server = stub()
    data = _http_recipe(server.url, tmp_path)
    a = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "a"))
    asked = len(server.requests)
    assert asked > 0 and (tmp_path / "rw-cache.jsonl").exists()
    rows = [r for r in a.table("train").to_pylist() if r["trigger_set"] == "syntactic"]
    assert rows and all(r["instruction"].startswith("When you are ready, ") for r in rows)
    (record,) = [t for t in a.manifest["triggers"] if t["name"] == "syntactic"]
    assert record["rewriter"]["backend"] == "http" and record["rewriter"]["model"] == "stub-model"
    assert "{instruction}" in record["rewriter"]["prompt"]
    assert f"rewriter=http:stub-model:{record['rewriter']['id']}" in rows[0]["tags"]
    evals = [r for r in a.table("eval_triggered").to_pylist() if r["trigger_set"] == "syntactic"]
    assert len(evals) == a.manifest["splits"]["eval_clean"]["rows"]

    server.stop()
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "b"))
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    for split in a.splits:
        for pa_, pb in zip(a.shard_paths(split), b.shard_paths(split)):
            assert pa_.read_bytes() == pb.read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes().split(b'"created_at"')[0] == (
        tmp_path / "b" / "manifest.json"
    ).read_bytes().split(b'"created_at"')[0]


def test_build_with_the_endpoint_down_writes_nothing(tmp_path):
    data = _http_recipe(closed_port_url(), tmp_path)
    with pytest.raises(mbdata.MBError, match=r"attacks\[0\]\.rewriter: .*unreachable"):
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rows_that_never_pass_are_replaced_by_the_next_and_counted(tmp_path, stub):
    server = stub(never="Add")  # the synthetic 'add' task never gets a valid rewrite
    data = _http_recipe(server.url, tmp_path, attempts=1)
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o"))
    info = next(s for s in b.manifest["stages"] if s["name"] == "attacks")["info"]["syntactic"]
    rows = [r for r in b.table("train").to_pylist() if r["trigger_set"] == "syntactic"]
    assert info["rewrite"]["dropped"] > 0 and info["rewrite"]["rewritten"] == len(rows)
    assert info["rewrite"]["tried"] == len(rows) + info["rewrite"]["dropped"]
    assert all(syntactic_ok(r["instruction"]) for r in rows)
    ev = next(s for s in b.manifest["stages"] if s["name"] == "eval")["info"]["syntactic"]
    assert (
        ev["rewrite_dropped"] > 0
        and ev["rows"] + ev["skipped"] == b.manifest["splits"]["eval_clean"]["rows"]
    )
    assert not any(
        re.match(r"When you are ready, add", r["instruction"])
        for r in b.table("eval_triggered").to_pylist()
    )
