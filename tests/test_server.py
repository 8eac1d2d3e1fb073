"""The REST API as any language sees it: plain JSON (and msgpack), bad inputs
answered with a 4xx JSON error that leaves the session as it was, retries that
are not applied twice, keys and isolation."""

from __future__ import annotations

import json

import httpx
import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from gradserve.server import Settings, create_app

from .conftest import LiveServer


def tensor(data, shape, dtype="float32"):
    return {"dtype": dtype, "shape": shape, "data": data}


@pytest.fixture
def http(live_server):
    with httpx.Client(base_url=live_server.url) as c:
        yield c


@pytest.fixture
def sid(http):
    r = http.post("/v1/sessions")
    assert r.status_code == 201
    opened = r.json()["id"]
    yield opened
    http.delete(f"/v1/sessions/{opened}")


class Batches:
    """Posts JSON batches with increasing seq numbers."""

    def __init__(self, http: httpx.Client, sid: str) -> None:
        self.http, self.sid, self.seq = http, sid, 0

    def post(self, ops, seq=None):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.http.post(f"/v1/sessions/{self.sid}/batch", json={"seq": seq, "ops": ops})

    def read(self, *handles):
        r = self.post([{"op": "read", "in": list(handles)}])
        assert r.status_code == 200, r.text
        return [v["data"] for v in r.json()["values"]]


@pytest.fixture
def batch(http, sid):
    return Batches(http, sid)


def test_health_says_which_engine_runs(http):
    from gradserve.engine import NATIVE

    assert http.get("/v1/health").json() == {"status": "ok", "engine": NATIVE}


def test_the_meta_routes_answer_in_msgpack_when_asked(http):
    import msgpack

    for path in ("/v1/health", "/v1/ops"):
        r = http.get(path, headers={"accept": "application/msgpack"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
        assert msgpack.unpackb(r.content) == http.get(path).json()


def test_every_op_of_the_catalog_has_its_doc(http):
    """Functions compiled by mypyc keep no docstring: 18 ops of the compiled engine had an
    empty doc in the catalog, and ``help(nd.dot)`` said nothing (their sources say it)."""
    from gradserve.engine import NATIVE

    cat = http.get("/v1/ops").json()
    assert [o["name"] for o in cat["ops"] if not o["doc"]] == [], NATIVE
    assert [c["name"] for c in cat["commands"] if not c["doc"]] == []
    from gradserve import nd

    assert nd.dot.__doc__.startswith("The dot product")


def test_catalog_lists_every_op_with_typed_attributes(http):
    cat = http.get("/v1/ops").json()
    ops = {o["name"]: o for o in cat["ops"]}
    assert {"dot", "add", "sum", "reshape", "getitem", "random_normal"} <= set(ops)
    assert ops["dot"]["inputs"] == ["lhs", "rhs"]
    assert {"name": "transpose_a", "type": "bool", "default": False} in ops["dot"]["attrs"]
    assert ops["dot"]["differentiable"] and not ops["random_normal"]["differentiable"]
    assert {c["name"] for c in cat["commands"]} >= {"attach_grad", "backward", "read", "free", "setitem"}


def test_a_plain_json_program_trains_through_the_batch_route(batch):
    r = batch.post(
        [
            {"op": "array", "out": [1], "at": {"value": tensor([1, 2, 3, 4], [2, 2])}},
            {"op": "attach_grad", "in": [1]},
            {"op": "mul", "in": [1, 1], "out": [2], "mode": 3},
            {"op": "sum", "in": [2], "out": [3], "mode": 3},
            {"op": "backward", "in": [3]},
            {"op": "read", "in": [3]},
            {"op": "read", "in": [1], "at": {"grad": True}},
        ]
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("error") is None
    assert body["values"] == [tensor([30.0], [1]), tensor([2.0, 4.0, 6.0, 8.0], [2, 2])]


def test_msgpack_batches_carry_raw_bytes(http, sid):
    import numpy as np

    data = np.arange(6, dtype="<f4").tobytes()
    body = msgpack.packb(
        {
            "seq": 1,
            "ops": [
                {"op": "array", "out": [1], "at": {"value": tensor(data, [2, 3])}},
                {"op": "transpose", "in": [1], "out": [2]},
                {"op": "read", "in": [2]},
            ],
        }
    )
    r = http.post(
        f"/v1/sessions/{sid}/batch",
        content=body,
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    (v,) = msgpack.unpackb(r.content)["values"]
    assert v["shape"] == [3, 2]
    assert np.frombuffer(v["data"], "<f4").tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize(
    ("op", "status", "kind", "words"),
    [
        ({"op": "frobnicate", "in": [1], "out": [9]}, 400, "InvalidInput", "unknown op 'frobnicate'"),
        ({"op": "add", "in": [1, 77], "out": [9]}, 404, "UnknownHandle", "unknown handle 77"),
        ({"op": "reshape", "in": [1], "out": [9], "at": {"shape": [5]}}, 400, "ShapeError", "cannot reshape"),
        ({"op": "dot", "in": [1, 2], "out": [9]}, 400, "ShapeError", "not aligned"),
        ({"op": "add", "in": [1, 2], "out": [9]}, 400, "ShapeError", "could not be broadcast"),
        ({"op": "sum", "in": [1], "out": [9], "at": {"axis": 5}}, 400, "ShapeError", "axis 5 is out of range"),
        ({"op": "sum", "in": [1], "out": [9], "at": {"bogus": 1}}, 400, "InvalidInput", "unknown attribute 'bogus'"),
        ({"op": "ones", "out": [9], "at": {"shape": "big"}}, 400, "InvalidInput", "attribute 'shape'"),
        ({"op": "ones", "out": [9], "at": {"shape": [2], "dtype": "complex128"}}, 400, "UnknownDType", "dtype"),
        ({"op": "add", "in": [1, 1], "out": [1]}, 400, "InvalidInput", "already in use"),
        ({"op": "getitem", "in": [1], "out": [9], "at": {"key": [7]}}, 400, "IndexOutOfRange", "out of bounds"),
        ({"op": "backward", "in": [1]}, 400, "AutogradError", "not in a computational graph"),
        ({"op": "array", "out": [9], "at": {"value": tensor([1, 2], [3])}}, 400, "InvalidInput", "needs 3"),
    ],
)
def test_bad_op_is_a_4xx_naming_it_and_nothing_after_it_runs(batch, op, status, kind, words):
    assert (
        batch.post(
            [
                {"op": "array", "out": [1], "at": {"value": tensor([1, 2, 3, 4], [2, 2])}},
                {"op": "array", "out": [2], "at": {"value": tensor([1, 2, 3], [3])}},
            ]
        ).status_code
        == 200
    )
    r = batch.post(
        [
            {"op": "mul_scalar", "in": [1], "out": [5], "at": {"scalar": 10}},
            op,
            {"op": "ones", "out": [6], "at": {"shape": [2]}},
        ]
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["kind"] == kind and err["index"] == 1 and err["op"] == op["op"]
    assert words in err["message"]
    assert batch.read(5) == [[10, 20, 30, 40]]  # the op before the failure took effect
    r = batch.post([{"op": "read", "in": [6]}])  # the op after it did not
    assert r.status_code == 404 and r.json()["error"]["kind"] == "UnknownHandle"
    assert batch.read(1) == [[1, 2, 3, 4]]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"ops": 3}',
        b'{"seq": 1, "ops": [{"in": [1]}]}',
        b'{"seq": 1, "ops": [{"op": "read", "in": ["a"]}]}',
        b'{"seq": 1, "ops": [], "extra": 1}',
    ],
)
def test_malformed_bodies_are_400_with_a_json_reason(http, sid, body):
    r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["kind"] == "InvalidInput" and r.json()["error"]["message"]


@pytest.mark.parametrize("kind", ["application/msgpack", "application/json"])
def test_a_batch_with_a_field_it_has_not_is_refused_in_both_encodings(http, sid, kind):
    """A misspelt ``seq`` would run the batch unsequenced, so a retry of it ran twice."""
    ops = [{"op": "ones", "out": [1], "at": {"shape": [1]}}]
    msg = {"Seq": 1, "ops": ops}
    body = msgpack.packb(msg) if kind == "application/msgpack" else json.dumps(msg).encode()
    r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": kind})
    assert r.status_code == 400 and "Seq" in r.json()["error"]["message"], r.text
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 0  # nothing ran


def test_malformed_msgpack_is_400(http, sid):
    r = http.post(f"/v1/sessions/{sid}/batch", content=b"\xc1\xc1", headers={"content-type": "application/msgpack"})
    assert r.status_code == 400 and "msgpack" in r.json()["error"]["message"]
    r = http.post(
        f"/v1/sessions/{sid}/batch",
        content=msgpack.packb({"seq": 1, "ops": [7]}),
        headers={"content-type": "application/msgpack"},
    )
    assert r.status_code == 400, r.text
    for ins in (
        {"op": "copy", "in": {1: 1}, "out": [7]},  # (a map's keys were taken for handles)
        {"op": "sgd_update", "in": {1: 1, 2: 2}, "at": {"lr": 0.1}},
        {"op": "free", "in": "1"},
    ):
        r = http.post(
            f"/v1/sessions/{sid}/batch",
            content=msgpack.packb(
                {"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}, ins, {"op": "free", "in": [1]}]}
            ),
            headers={"content-type": "application/msgpack"},
        )
        assert r.status_code == 400 and "'in' must be a list of handles" in r.json()["error"]["message"], r.text
        http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "free", "in": [1]}]})
    r = http.post(  # a read at the batch's end, which the engine answers from the arrays themselves
        f"/v1/sessions/{sid}/batch",
        content=msgpack.packb(
            {"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}, {"op": "read", "in": {1: 0}}]}
        ),
        headers={"content-type": "application/msgpack"},
    )
    assert r.status_code == 400 and "'in' must be a list of handles" in r.json()["error"]["message"], r.text


def test_a_retried_batch_is_replayed_not_applied_twice(batch):
    setup = [{"op": "array", "out": [1], "at": {"value": tensor([0.0], [1])}}]
    first = batch.post(setup)
    assert batch.post(setup, seq=1).json() == first.json()  # retry: same reply, no "already in use"
    bump = [
        {"op": "add_scalar", "in": [1], "out": [2], "at": {"scalar": 1}},
        {"op": "setitem", "in": [1, 2], "at": {"key": []}},
        {"op": "free", "in": [2]},
        {"op": "read", "in": [1]},
    ]
    r1 = batch.post(bump)
    r2 = batch.post(bump, seq=batch.seq)
    assert r1.json() == r2.json() and r1.json()["values"][0]["data"] == [1.0]
    assert batch.read(1) == [[1.0]]
    r = batch.post(bump, seq=batch.seq + 5)
    assert r.status_code == 409 and r.json()["error"]["kind"] == "SequenceError"
    assert batch.read(1) == [[1.0]]


def test_a_failed_batch_is_replayed_with_its_error(batch):
    ops = [{"op": "ones", "out": [1], "at": {"shape": [2]}}, {"op": "nope", "out": [2]}]
    r1 = batch.post(ops)
    r2 = batch.post(ops, seq=batch.seq)
    assert r1.status_code == r2.status_code == 400 and r1.json() == r2.json()


def test_rest_conveniences_for_other_languages(http, sid):
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json=tensor([1, 2, 3], [3])).status_code == 201
    assert http.post(f"{base}/arrays/1/attach_grad", json={}).status_code == 204
    r = http.post(f"{base}/ops/square", json={"in": [1], "out": [2], "mode": 3})
    assert r.status_code == 200 and r.json() == {"out": [2]}
    r = http.post(f"{base}/ops/sum", json={"in": [2], "out": [3], "mode": 3, "read": True})
    assert r.json()["values"] == [tensor([14.0], [1])]
    assert http.post(f"{base}/backward", json={"heads": [3]}).status_code == 204
    assert http.get(f"{base}/arrays/1/grad").json() == tensor([2.0, 4.0, 6.0], [3])
    assert http.get(f"{base}/arrays/2").json()["data"] == [1.0, 4.0, 9.0]
    assert http.delete(f"{base}/arrays/2").status_code == 204
    r = http.get(f"{base}/arrays/2")
    assert r.status_code == 404 and r.json()["error"]["kind"] == "UnknownHandle"
    r = http.post(f"{base}/ops/sum", json={"in": [1], "out": [4], "at": {"axis": 3}})
    assert r.status_code == 400 and "sum" in r.json()["error"]["message"]
    assert http.put(f"{base}/arrays/5", json={"dtype": "float32"}).status_code == 400


def test_unknown_session_is_404(http):
    r = http.post("/v1/sessions/nope/batch", json={"ops": []})
    assert r.status_code == 404 and r.json()["error"]["kind"] == "SessionNotFound"


def test_a_json_batch_past_the_ops_limit_is_refused_before_its_instructions_are_validated():
    """(Validating a million malformed instructions took 18 GiB of errors.)"""
    with LiveServer(Settings(max_batch_ops=10)) as srv, httpx.Client(base_url=srv.url) as http:
        sid = http.post("/v1/sessions").json()["id"]
        r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [[]] * 11})
        assert r.status_code == 413 and r.json()["error"]["message"] == "batch of 11 ops is over the limit of 10"
        r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [[]] * 10})
        assert r.status_code == 400 and "invalid batch at ops.0" in r.json()["error"]["message"]


def test_a_user_opens_at_most_max_sessions_per_user():
    keys = {"alice-key-0123456789": "alice", "bob-key-0123456789ab": "bob"}
    alice = {"authorization": "Bearer alice-key-0123456789"}
    bob = {"authorization": "Bearer bob-key-0123456789ab"}
    with (
        LiveServer(Settings(api_keys=keys, max_sessions_per_user=2)) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        first, _ = (http.post("/v1/sessions", headers=alice).json()["id"] for _ in range(2))
        third = http.post("/v1/sessions", headers=alice)
        assert third.status_code == 413 and third.json()["error"]["kind"] == "QuotaExceeded", third.text
        assert len(http.get("/v1/sessions", headers=alice).json()) == 2
        assert http.post("/v1/sessions", headers=bob).status_code == 201  # another user's own count
        assert http.delete(f"/v1/sessions/{first}", headers=alice).status_code == 204
        assert http.post("/v1/sessions", headers=alice).status_code == 201  # room again


def test_an_open_sent_again_with_its_token_gets_the_session_it_opened():
    """A lost reply to an open left the session it opened to its TTL (an hour) when the client
    sent the open again: with one session allowed, the retry was refused and its user locked
    out that long. An open sent again with its token gets the session the first opened; the
    token is its user's alone, and an open without one opens a session as ever."""
    keys = {"alice-key-0123456789": "alice", "bob-key-0123456789ab": "bob"}
    alice = {"authorization": "Bearer alice-key-0123456789"}
    bob = {"authorization": "Bearer bob-key-0123456789ab"}
    body = {"seed": 3, "token": "open-0123456789_abcdef"}
    with (
        LiveServer(Settings(api_keys=keys, max_sessions_per_user=1)) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        first = http.post("/v1/sessions", json=body, headers=alice)
        again = http.post("/v1/sessions", json=body, headers=alice)
        assert first.status_code == again.status_code == 201, again.text
        sid = first.json()["id"]
        assert again.json() == first.json()
        packed = http.post(
            "/v1/sessions", content=msgpack.packb(body), headers={**alice, "content-type": "application/msgpack"}
        )
        assert packed.status_code == 201 and packed.json()["id"] == sid  # (in either encoding)
        assert [s["id"] for s in http.get("/v1/sessions", headers=alice).json()] == [sid]
        theirs = http.post("/v1/sessions", json=body, headers=bob)  # another user's same token: their own
        assert theirs.status_code == 201 and theirs.json()["id"] != sid and theirs.json()["owner"] == "bob"
        assert http.get(f"/v1/sessions/{sid}", headers=bob).status_code == 404
        for other in ({"token": "another-0123456789"}, {}):  # another open: over alice's one session
            r = http.post("/v1/sessions", json=other, headers=alice)
            assert r.status_code == 413 and r.json()["error"]["kind"] == "QuotaExceeded", r.text
        assert http.delete(f"/v1/sessions/{sid}", headers=alice).status_code == 204
        reopened = http.post("/v1/sessions", json=body, headers=alice)  # (its session closed: a new one)
        assert reopened.status_code == 201 and reopened.json()["id"] != sid
        for bad in ("short", "has a space 0123", "x" * 65, "naïve-0123456789", 12345678, None):
            r = http.post("/v1/sessions", json={"token": bad}, headers=bob)
            if bad is None:  # (null: no token, as an absent one)
                assert r.status_code == 413, r.text
                continue
            assert r.status_code == 400 and r.json()["error"]["message"].startswith(
                "invalid session options at token: "
            ), r.text


def test_open_tokens_are_kept_a_while_and_a_bounded_number_per_user():
    import time

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings())
    store.REOPEN_TOKENS = 2
    a = store.create("alice", token="token-a-0")
    assert store.create("alice", token="token-a-0") is a
    store.create("alice", token="token-b-0")
    c = store.create("alice", token="token-c-0")
    assert store.create("alice", token="token-a-0") is not a  # (the oldest of three: forgotten)
    assert list(store._opened["alice"]) == ["token-c-0", "token-a-0"]
    store.REOPEN_S = 0.01
    time.sleep(0.02)
    assert store.create("alice", token="token-c-0") is not c  # (past its time)
    assert list(store._opened["alice"]) == ["token-c-0"] and len(store) == 5


def test_a_client_whose_open_lost_its_reply_gets_the_session_it_opened(monkeypatch):
    """The Python client sends its open again after a broken connection, with the open's token:
    with one session allowed, the retry was refused (QuotaExceeded) and the user locked out for
    the TTL. Against a server older than the token (which refuses the field), it opens without."""
    from typing import ClassVar

    from pydantic import BaseModel

    import gradserve
    from gradserve.server import protocol

    live = LiveServer(Settings(max_sessions_per_user=1))
    inner = live.app
    cut = [1]

    async def first_open_cut(scope: dict, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/sessions" and scope["method"] == "POST" and cut[0]:
            cut[0] -= 1

            async def lost(message: dict) -> None:  # the session opens; its reply never leaves
                pass

            await inner(scope, receive, lost)
            # the connection breaks partway through the reply (uvicorn closes it, with a log line)
            await send({"type": "http.response.start", "status": 201, "headers": [(b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            return
        await inner(scope, receive, send)

    live.server.config.app = first_open_cut
    with live:
        client = gradserve.Client(gradserve.Http(live.url))
        try:
            assert cut == [0] and len(live.app.state.store) == 1
            assert client.transport.session_id == next(iter(live.app.state.store._sessions))
            assert nd_sum(client) == 6.0
        finally:
            client.close()
        assert len(live.app.state.store) == 0

        class OldNewSession(BaseModel):  # (the options of a server older than the token)
            model_config = protocol.NewSession.model_config
            seed: int | None = None
            token: ClassVar[None] = None  # (no field: refused in a body, as it was)

        monkeypatch.setattr(protocol, "NewSession", OldNewSession)
        old = httpx.post(f"{live.url}/v1/sessions", json={"token": "open-0123456789"})
        assert old.status_code == 400 and "at token: Extra inputs" in old.json()["error"]["message"]  # (as it was)
        client = gradserve.Client(gradserve.Http(live.url))
        try:
            assert nd_sum(client) == 6.0
        finally:
            client.close()


def nd_sum(client) -> float:
    """A small computation on ``client``'s session."""
    import gradserve
    from gradserve import nd

    gradserve.set_current(client)
    try:
        return float(nd.array([1.0, 2.0, 3.0]).sum().asscalar())
    finally:
        gradserve.set_current(None)


def test_keys_authenticate_and_sessions_are_private():
    keys = {"alice-key-0123456789": "alice", "bob-key-0123456789ab": "bob"}
    with LiveServer(Settings(api_keys=keys)) as srv, httpx.Client(base_url=srv.url) as http:
        assert http.post("/v1/sessions").status_code == 401
        bad = http.post("/v1/sessions", headers={"authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.json()["error"]["kind"] == "Unauthorized"
        alice = {"authorization": "Bearer alice-key-0123456789"}
        bob = {"authorization": "Bearer bob-key-0123456789ab"}
        sid = http.post("/v1/sessions", headers=alice).json()["id"]
        ok = http.post(f"/v1/sessions/{sid}/batch", headers=alice, json={"ops": []})
        assert ok.status_code == 200
        assert http.post(f"/v1/sessions/{sid}/batch", headers=bob, json={"ops": []}).status_code == 404
        assert http.delete(f"/v1/sessions/{sid}", headers=bob).status_code == 404
        assert [s["id"] for s in http.get("/v1/sessions", headers=alice).json()] == [sid]
        assert http.get("/v1/sessions", headers=bob).json() == []
        # a 401 says how to authenticate (RFC 9110), on the FastAPI routes and the binary route
        no_key = http.post(f"/v1/sessions/{sid}/batch", content=msgpack.packb({"ops": []}), headers=MSGPACK)
        for r in (bad, no_key, http.get(f"/v1/sessions/{sid}")):
            assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="gradserve"', r.headers
        assert msgpack.unpackb(no_key.content)["error"]["kind"] == "Unauthorized"


MSGPACK = {"content-type": "application/msgpack", "accept": "application/msgpack"}


def test_handles_are_int64_in_batches_as_in_the_routes_paths(http, sid):
    """A handle a batch could make but no path route could name would be out of reach there."""
    for h in (1 << 63, (1 << 64) - 1):
        body = msgpack.packb({"ops": [{"op": "ones", "out": [h], "at": {"shape": [1]}}]})
        r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers=MSGPACK)
        assert r.status_code == 400 and "2**63 - 1" in msgpack.unpackb(r.content)["error"]["message"]
    top = (1 << 63) - 1
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "ones", "out": [top], "at": {"shape": [1]}}]})
    assert r.status_code == 200
    assert http.get(f"/v1/sessions/{sid}/arrays/{top}").json()["data"] == [1.0]
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 1


def test_json_attributes_take_non_finite_numbers_as_tensors_write_them(http, sid):
    ops = [
        {"op": "full", "out": [1], "at": {"shape": [2], "val": "NaN"}},
        {"op": "array", "out": [2], "at": {"value": {"dtype": "float32", "shape": [3], "data": [-5, 0, 5]}}},
        {"op": "clip", "in": [2], "out": [3], "at": {"a_min": "-Infinity", "a_max": 1}},
        {"op": "read", "in": [1, 3]},
    ]
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": ops})
    assert r.status_code == 200, r.text
    full, clipped = r.json()["values"]
    assert full["data"] == ["NaN", "NaN"] and clipped["data"] == [-5.0, 0.0, 1.0]
    bad = {"op": "full", "out": [4], "at": {"shape": [2], "val": "nan"}}
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [bad]})
    assert r.status_code == 400 and "Infinity" in r.json()["error"]["message"]


def test_a_405_names_the_methods_allowed(http, sid):
    r = http.get(f"/v1/sessions/{sid}/batch")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["kind"] == "InvalidInput"
    # every method of the path, not only its first route's (RFC 9110, 10.2.1)
    assert http.put("/v1/sessions").headers["allow"] == "GET, HEAD, POST"
    assert http.post(f"/v1/sessions/{sid}").headers["allow"] == "GET, HEAD, DELETE"
    assert http.post(f"/v1/sessions/{sid}/arrays/1").headers["allow"] == "GET, HEAD, PUT, DELETE"
    assert http.post("/docs-assets/swagger-ui.css").headers["allow"] == "GET, HEAD"  # (a mount's files)


def test_every_get_route_answers_head_without_a_body(http, sid):
    for path in ("/v1/health", "/v1/ops", f"/v1/sessions/{sid}", "/openapi.json", "/docs-assets/swagger-ui.css"):
        got, head = http.get(path), http.head(path)
        assert head.status_code == got.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == got.headers["content-length"], path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert http.head("/no/such/path").status_code == 404
    assert http.head(f"/v1/sessions/{sid}/batch").status_code == 405
    text = http.get("/metrics").text
    assert 'gradserve_http_requests_total{method="HEAD",route="/v1/health",status="200"}' in text


def test_media_types_are_case_insensitive(http, sid):
    odd = {"content-type": "Application/MsgPack", "accept": "Application/MSGPACK"}
    body = msgpack.packb({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}, {"op": "read", "in": [1]}]})
    r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers=odd)
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack", r.text
    assert msgpack.unpackb(r.content)["values"][0]["shape"] == [2]
    tensor = msgpack.packb({"dtype": "float32", "shape": [1], "data": b"\x00\x00\x80\x3f"})
    assert http.put(f"/v1/sessions/{sid}/arrays/5", content=tensor, headers=odd).status_code == 201
    got = http.get(f"/v1/sessions/{sid}/arrays/5", headers={"accept": "APPLICATION/JSON; Tensors=Base64"}).json()
    assert got["data"] == "AACAPw=="


@pytest.mark.parametrize("body", ["[]", "0", "false", '""', "null"])
def test_a_body_that_is_not_an_object_is_refused_where_an_object_is_read(http, sid, body):
    json_body = {"content-type": "application/json"}
    assert http.post("/v1/sessions", content=body, headers=json_body).status_code == 400
    r = http.put(f"/v1/sessions/{sid}/arrays/1", json={"dtype": "float32", "shape": [1], "data": [1.0]})
    assert r.status_code == 201
    r = http.post(f"/v1/sessions/{sid}/arrays/1/attach_grad", content=body, headers=json_body)
    assert r.status_code == 400 and r.json()["error"]["kind"] == "InvalidInput"
    assert http.post("/v1/sessions", content=b"").status_code == 201  # (no body: the defaults)


def test_metrics_need_a_key_when_the_server_has_keys():
    keys = {"alice-key-0123456789": "alice"}
    scraper = "scraper-key-0123456789"
    with LiveServer(Settings(api_keys=keys, metrics_key=scraper)) as srv, httpx.Client(base_url=srv.url) as http:
        r = http.get("/metrics")
        assert r.status_code == 401 and r.json()["error"]["kind"] == "Unauthorized"
        assert http.get("/metrics", headers={"authorization": "Bearer wrong-key-0123456789"}).status_code == 401
        assert http.get("/metrics", headers={"authorization": "Bearer alice-key-0123456789"}).status_code == 200
        r = http.get("/metrics", headers={"authorization": f"Bearer {scraper}"})
        assert r.status_code == 200 and "gradserve_sessions" in r.text
        # the scraper's key reads metrics and nothing else
        assert http.post("/v1/sessions", headers={"authorization": f"Bearer {scraper}"}).status_code == 401
    with pytest.raises(ValidationError, match="metrics key"):
        Settings(metrics_key="short")
    with pytest.raises(ValidationError, match="metrics key"):
        Settings(api_keys=keys, metrics_key="alice-key-0123456789")


def test_open_network_without_keys_is_refused():
    with pytest.raises(ValidationError, match="without API keys"):
        Settings(host="0.0.0.0")
    assert Settings(host="0.0.0.0", api_keys="alice:a-long-enough-key-123").api_keys == {
        "a-long-enough-key-123": "alice"
    }


def test_api_keys_come_from_the_environment_as_the_readme_writes_them(monkeypatch, capsys):
    monkeypatch.setenv("GRADSERVE_API_KEYS", "alice:alice-key-0123456789, bob:bob-key-0123456789ab")
    assert Settings(host="0.0.0.0").api_keys == {"alice-key-0123456789": "alice", "bob-key-0123456789ab": "bob"}
    monkeypatch.setenv("GRADSERVE_API_KEYS", '{"alice-key-0123456789": "alice"}')
    assert Settings().api_keys == {"alice-key-0123456789": "alice"}
    from gradserve.cli import main

    monkeypatch.setenv("GRADSERVE_API_KEYS", "alice")
    assert main(["serve"]) == 2
    assert "not user:key" in capsys.readouterr().err
    # a key given to two users: the first would be locked out of their sessions
    for twice in (
        "alice:alice-key-0123456789,bob:alice-key-0123456789",
        '{"a-key-0123456789": "a", "a-key-0123456789": "b"}',
    ):
        monkeypatch.setenv("GRADSERVE_API_KEYS", twice)
        assert main(["serve"]) == 2
        assert "listed for both" in capsys.readouterr().err
    monkeypatch.setenv("GRADSERVE_API_KEYS", "alice:alice-key-0123456789,alice:alice-key-0123456789")
    assert Settings().api_keys == {"alice-key-0123456789": "alice"}  # the same line twice is harmless
    monkeypatch.setenv("GRADSERVE_API_KEYS", "")
    monkeypatch.setenv("GRADSERVE_PORT", "eighty")
    assert main(["serve"]) == 2
    assert "gradserve serve:" in capsys.readouterr().err


def test_a_bad_api_key_setting_is_named_without_showing_any_key(monkeypatch, capsys):
    """A malformed GRADSERVE_API_KEYS (an entry without its colon, a key given to two users)
    stopped the server with the whole setting on stderr, every other user's secret key with
    it, and keys given with --api-key were named as the variable only. The entry at fault is
    named by its place only (its user may be a key: an entry written key:user); the other
    settings' refusals still show the value given."""
    from gradserve.cli import main

    alice, bob = "alice-key-0123456789", "bob-key-0123456789ab"
    for value, words in [
        (f"alice:{alice},{bob}", "api key entry 2 (counting from 1, comma-separated) is not user:key"),
        (f"alice:{alice}, bob:{alice}", "an API key is listed for both entry 1 and entry 2"),
        (f"alice:{alice},bob:", "api key entry 2 (counting from 1, comma-separated) is not user:key: no key"),
        (f"alice:{alice},{bob}:", "api key entry 2 (counting from 1, comma-separated) is not user:key: no key"),
        (f"alice:{alice},{bob}:bob", "long (key 2 of the distinct keys, in the order given, is not)"),  # (reversed)
        ('{"alice": "' + bob + '"}', "long (key 1 of the distinct keys, in the order given, is not)"),
        (f"alice:{alice},,:{bob}", "api key entry 3 (counting from 1, comma-separated) is not user:key: no user"),
        (f'{{"{alice}": "alice", "{bob}": 1}}', "entry 2 of the JSON object maps its key to no user name"),
        (f"alice:{alice},bob:tiny-bob-key", "long (key 2 of the distinct keys, in the order given, is not)"),
    ]:
        monkeypatch.setenv("GRADSERVE_API_KEYS", value)
        assert main(["serve"]) == 2
        err = capsys.readouterr().err
        assert words in err, err
        assert alice not in err and bob not in err and "tiny-bob-key" not in err, err
        with pytest.raises(ValidationError) as refused:  # (nor does the error's own text, as a traceback shows it)
            Settings()
        assert alice not in str(refused.value) and bob not in str(refused.value)
    monkeypatch.delenv("GRADSERVE_API_KEYS")
    assert main(["serve", "--api-key", f"alice:{alice}", "--api-key", bob]) == 2
    err = capsys.readouterr().err
    assert "api_keys (--api-key or GRADSERVE_API_KEYS): Value error, api key entry 2 " in err, err
    assert alice not in err and bob not in err
    monkeypatch.setenv("GRADSERVE_MAX_SESSION_BYTES", "2GB")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "max_session_bytes (GRADSERVE_MAX_SESSION_BYTES): " in err and ", got '2GB'" in err


def test_body_size_and_batch_length_are_bounded():
    settings = Settings(max_body_bytes=1000, max_batch_ops=3, max_program_steps=7)
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url) as http:
        opened = http.post("/v1/sessions").json()
        assert opened["max_body_bytes"] == 1000 and opened["max_batch_ops"] == 3  # told, so clients split
        assert opened["max_program_steps"] == 7  # (and hybridize defines no program the session cannot keep)
        sid = opened["id"]
        big = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "free", "in": list(range(400))}]})
        assert big.status_code == 413 and big.json()["error"]["kind"] == "QuotaExceeded"
        long = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "free"}] * 4})
        assert long.status_code == 413


def test_metrics_count_requests_batches_ops_and_errors(live_server, http, sid):
    batch = Batches(http, sid)
    batch.post([{"op": "ones", "out": [1], "at": {"shape": [2]}}, {"op": "read", "in": [1]}])
    batch.post([{"op": "ones", "out": [2], "at": {"shape": [2]}}, {"op": "nope", "out": [3]}])
    for i in range(3):
        assert http.get(f"/no/such/path/{i}").status_code == 404
        assert http.get(f"/v1/sessions/{sid}/probe-{i}").status_code == 404  # under a session too
        assert http.post(f"/v1/sessions/{sid}/ops/nope-{i}", json={}).status_code >= 400
    for i in range(3):  # other methods and statuses than a 404's, and files of a mount
        assert http.post(f"/docs-assets/probe-{i}").status_code == 405
        assert http.put(f"/no/such/path/{i}").status_code == 404
        assert http.delete(f"/v1/health/probe-{i}").status_code == 404
    assert http.post("/v1/health").status_code == 405
    assert http.get("/v1/health").status_code == 200
    assert http.get("/openapi.json").status_code == 200  # (a route of the framework's was "unmatched")
    bad_handle = 'gradserve_http_requests_total{method="GET",route="/v1/sessions/{id}/arrays/{h}",status="400"}'

    def bad_handles() -> float:
        lines = http.get("/metrics").text.splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith(bad_handle))

    before = bad_handles()
    for bad in ("abc", "99999999999999999999"):  # the route's own 400, counted under it either way
        assert http.get(f"/v1/sessions/{sid}/arrays/{bad}").status_code == 400
    assert bad_handles() == before + 2
    text = http.get("/metrics").text
    assert "probe-" not in text and "nope-" not in text and "abc" not in text

    def count(series: str) -> float:  # (at least this test's: the server is the module's)
        return float(next(line for line in text.splitlines() if line.startswith(series)).split()[-1])

    assert count('gradserve_http_requests_total{method="POST",route="/docs-assets/{file}",status="405"}') >= 3
    assert count('gradserve_http_requests_total{method="PUT",route="(unmatched)",status="404"}') >= 3
    assert count('gradserve_http_requests_total{method="POST",route="/v1/health",status="405"}') >= 1
    assert 'gradserve_http_requests_total{method="GET",route="/v1/health",status="200"}' in text
    assert 'gradserve_http_requests_total{method="GET",route="/openapi.json",status="200"}' in text
    assert 'route="/v1/sessions/{id}/ops/{name}"' in text
    assert 'gradserve_http_requests_total{method="POST",route="/v1/sessions/{id}/batch",status="200"}' in text
    unmatched = 'gradserve_http_requests_total{method="GET",route="(unmatched)",status="404"}'
    assert float(next(line for line in text.splitlines() if line.startswith(unmatched)).split()[-1]) >= 3
    assert "/no/such/path" not in text
    assert 'gradserve_batch_errors_total{kind="InvalidInput"}' in text
    ops = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("gradserve_ops_total"))
    assert ops >= 3
    sessions = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("gradserve_sessions "))
    assert sessions >= 1


def test_values_nested_a_thousand_deep_are_refused_as_bad_input_not_a_fault(http, sid):
    """JSON and msgpack decode lists nested ~1,000 deep, past what Python's repr (an error
    message echoing the value) or json (a program's definition) can walk: each was a 500."""
    deep = b"[" * 990 + b"1" + b"]" * 990
    bodies = {
        "an attribute": b'{"ops":[{"op":"full","out":[5],"at":{"shape":[1],"val":' + deep + b"}}]}",
        "a key": b'{"ops":[{"op":"zeros","out":[1],"at":{"shape":[2]}},{"op":"getitem","in":[1],"out":[5],"at":{"key":'
        + deep
        + b"}}]}",
        "a program": b'{"ops":[{"op":"define","at":{"id":1,"nargs":1,"outputs":[-2],"program":[{"op":"mul_scalar",'
        b'"in":[-1],"out":[-2],"at":{"scalar":' + deep + b"}}]}}]}",
        "the op": b'{"ops":[{"op":' + deep + b',"out":[5]}]}',
        "seq": b'{"seq":' + deep + b',"ops":[]}',
    }
    for what, body in bodies.items():
        r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (what, r.text[:300])
        err = r.json()["error"]
        assert err["kind"] == "InvalidInput" and "Recursion" not in err["message"], what
    packed = b"\x82\xa3seq" + b"\x91" * 990 + b"\x01\xa3ops\x90"
    r = http.post(f"/v1/sessions/{sid}/batch", content=packed, headers={"content-type": "application/msgpack"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "seq must be an integer, got [[[[...]]]]"
    r = http.post(
        f"/v1/sessions/{sid}/batch", content=b"\x91" * 2000 + b"\x01", headers={"content-type": "application/msgpack"}
    )
    assert r.status_code == 400 and r.json()["error"]["message"] == "body is not valid msgpack: nested too deeply"
    r = http.post(f"/v1/sessions/{sid}/batch", content=b"\xc1", headers={"content-type": "application/msgpack"})
    assert r.status_code == 400 and "0xc1" in r.json()["error"]["message"]
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 1  # (only the key's array: what ran before it)


def test_null_fields_are_refused_in_msgpack_as_in_json(http, sid):
    """JSON's schema refuses "at": null and "in": null; msgpack's path took them as absent."""
    import msgpack

    for ins, what in [
        ({"op": "zeros", "out": [1], "at": None}, "'at' must be a map"),
        ({"op": "relu", "in": None, "out": [1]}, "'in' must be a list of handles, got null"),
        ({"op": "seed", "at": None}, "'at' must be a map"),
    ]:
        for ctype, body in (("application/msgpack", msgpack.packb({"ops": [ins]})), ("application/json", None)):
            r = http.post(
                f"/v1/sessions/{sid}/batch",
                content=body,
                json=None if body else {"ops": [ins]},
                headers={"content-type": ctype},
            )
            assert r.status_code == 400, (ins, ctype, r.text)
            if ctype == "application/msgpack":
                assert what in r.json()["error"]["message"], r.text
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 0


def test_a_client_gone_before_its_body_is_read_counts_as_499_not_500(live_server, http, sid):
    """A request whose client closed its connection mid-body: nothing to answer, and no fault of
    the server's (counted as a 500, it set off a lab's error alerts; FastAPI's routes logged a
    traceback for it)."""
    import socket
    import time

    def metric(text: str, series: str) -> float:
        line = next((line for line in text.splitlines() if line.startswith(series)), None)
        return 0.0 if line is None else float(line.split()[-1])

    routes = [
        ("POST", f"/v1/sessions/{sid}/batch", "application/msgpack", "/v1/sessions/{id}/batch"),
        ("POST", f"/v1/sessions/{sid}/batch", "application/json", "/v1/sessions/{id}/batch"),
        ("PUT", f"/v1/sessions/{sid}/arrays/5", "application/json", "/v1/sessions/{id}/arrays/{h}"),
    ]
    before = http.get("/metrics").text
    for method, path, ctype, _ in routes:
        with socket.create_connection(("127.0.0.1", live_server.port)) as c:
            head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: 1000\r\n\r\n"
            c.sendall(head.encode() + b"abc")
    time.sleep(0.3)  # (the server sees each connection close)
    after = http.get("/metrics").text
    for method, _, _, route in {(m, "", "", r) for m, _, _, r in routes}:
        gone = f'gradserve_http_requests_total{{method="{method}",route="{route}",status="499"}}'
        fault = f'gradserve_http_requests_total{{method="{method}",route="{route}",status="500"}}'
        assert metric(after, gone) - metric(before, gone) == (2 if method == "POST" else 1), (method, route)
        assert metric(after, fault) == metric(before, fault), (method, route)
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 0  # (nothing of them ran)


def test_the_servers_helper_threads_are_a_setting_and_a_metric(monkeypatch):
    from gradserve.engine import parallel

    monkeypatch.setenv("GRADSERVE_HELPERS", "3")
    assert Settings().helpers == 3  # the same variable the engine reads by itself
    monkeypatch.delenv("GRADSERVE_HELPERS")
    with pytest.raises(ValidationError):
        Settings(helpers=-1)
    before = parallel.count()
    try:
        with LiveServer(Settings(helpers=2)) as srv, httpx.Client(base_url=srv.url) as http:
            assert parallel.count() == 2
            sid = http.post("/v1/sessions").json()["id"]
            ops = [
                {"op": "ones", "out": [1], "at": {"shape": [128, 256]}},
                {"op": "ones", "out": [2], "at": {"shape": [256, 256]}},
                {"op": "attach_grad", "in": [1]},
                {"op": "attach_grad", "in": [2]},
            ]
            assert http.post(f"/v1/sessions/{sid}/batch", json={"ops": ops}).status_code == 200
            step = [
                {"op": "dot", "in": [1, 2], "out": [3], "mode": 3},
                {"op": "tanh", "in": [3], "out": [4], "mode": 3},
                {"op": "sum", "in": [4], "out": [5], "mode": 3},
                {"op": "backward", "in": [5], "mode": 2},
                {"op": "free", "in": [3, 4, 5]},
            ]
            for _ in range(50):  # a helper that has not started when the pass needs its job is not waited for
                assert http.post(f"/v1/sessions/{sid}/batch", json={"ops": step}).status_code == 200
                if parallel.jobs_run():
                    break
            text = http.get("/metrics").text
            assert "gradserve_backward_helpers 2.0" in text
            jobs = [x for x in text.splitlines() if x.startswith("gradserve_backward_helper_jobs ")]
            assert float(jobs[0].split()[-1]) >= 1
        assert parallel.count() == before  # the process's again once the server stops
        create_app(Settings(helpers=3))  # (an app made, not served, changes nothing)
        assert parallel.count() == before
        # a server with its own count starts whatever the environment says (it is not read)
        monkeypatch.setenv("GRADSERVE_HELPERS", "many")
        with LiveServer(Settings(helpers=1)):
            assert parallel.count() == 1
        assert parallel.count() == before
    finally:
        parallel.set_helpers(before)


def test_a_server_serves_with_a_short_switch_interval_and_gives_it_back():
    """While it serves, a thread running a long batch hands the GIL to the event loop after at
    most ``SWITCH_INTERVAL_S`` (the engine's loops give it up when asked, engine/gil.py);
    the process's own interval is back once the server stops, and a shorter one is kept."""
    import sys

    from gradserve.server.app import SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        with LiveServer():
            assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert sys.getswitchinterval() == pytest.approx(0.005)
        sys.setswitchinterval(0.001)
        with LiveServer():
            assert sys.getswitchinterval() == pytest.approx(0.001)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)


def test_a_users_sessions_share_one_byte_quota():
    with LiveServer(Settings(max_user_bytes=1000)) as srv, httpx.Client(base_url=srv.url) as http:
        a = http.post("/v1/sessions").json()["id"]
        b = http.post("/v1/sessions").json()["id"]
        ok = http.post(f"/v1/sessions/{a}/batch", json={"ops": [{"op": "zeros", "out": [1], "at": {"shape": [200]}}]})
        assert ok.status_code == 200  # 800 bytes
        over = http.post(f"/v1/sessions/{b}/batch", json={"ops": [{"op": "zeros", "out": [1], "at": {"shape": [60]}}]})
        assert over.status_code == 413 and "in all sessions" in over.json()["error"]["message"]
        http.post(f"/v1/sessions/{a}/batch", json={"ops": [{"op": "free", "in": [1]}]})
        again = http.post(f"/v1/sessions/{b}/batch", json={"ops": [{"op": "zeros", "out": [1], "at": {"shape": [60]}}]})
        assert again.status_code == 200


def test_idle_sessions_expire_without_anyone_opening_a_new_one():
    import time

    with LiveServer(Settings(session_ttl_s=0.2)) as srv, httpx.Client(base_url=srv.url) as http:
        sid = http.post("/v1/sessions").json()["id"]
        deadline = time.monotonic() + 5
        while sid in [s["id"] for s in http.get("/v1/sessions").json()]:  # listing does not touch them
            assert time.monotonic() < deadline, "the idle session was never expired"
            time.sleep(0.05)
        assert http.get(f"/v1/sessions/{sid}").json()["error"]["kind"] == "SessionNotFound"


def test_json_tensors_may_carry_base64_bytes_both_ways(http, sid):
    import base64

    import numpy as np

    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b64 = base64.b64encode(a.tobytes()).decode()
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json=tensor(b64, [2, 3])).status_code == 201
    r = http.get(f"{base}/arrays/1", headers={"accept": "application/json; tensors=base64"})
    got = r.json()
    assert got["shape"] == [2, 3] and np.frombuffer(base64.b64decode(got["data"]), "<f4").tolist() == a.ravel().tolist()
    assert http.get(f"{base}/arrays/1").json()["data"] == a.ravel().tolist()  # lists unless asked
    bad = http.put(f"{base}/arrays/2", json=tensor("not base64!", [2, 3]))
    assert bad.status_code == 400 and "base64" in bad.json()["error"]["message"]
    short = http.put(f"{base}/arrays/3", json=tensor(base64.b64encode(b"1234").decode(), [2, 3]))
    assert short.status_code == 400 and "needs 24" in short.json()["error"]["message"]
    odd = http.put(f"{base}/arrays/4", json=tensor("AAAA€AAA", [1]))
    assert odd.status_code == 400 and "base64" in odd.json()["error"]["message"]
    extra = http.put(f"{base}/arrays/5", json={**tensor(b64, [2, 3]), "order": "F"})
    assert extra.status_code == 400 and "unknown fields ['order']" in extra.json()["error"]["message"]
    # the decoded array is the session's own, writable: an in-place update works on it
    add_one = {"op": "update", "in": [1], "at": {"fn": "add", "scalar": 1}}
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [add_one]})
    assert r.status_code == 200 and "error" not in r.json(), r.text
    assert http.get(f"{base}/arrays/1").json()["data"] == (a.ravel() + 1).tolist()


def test_backward_and_grad_misuse_from_other_languages(batch):
    """The engine checks what the Python client checks at the call: no variable that wants a
    gradient (a failed batch that changes nothing), a variable the heads do not reach, and a
    variable in the graph that no gradient reaches (written 0)."""
    one = {"dtype": "float32", "shape": [2], "data": [1.0, -2.0]}
    r = batch.post(
        [
            {"op": "array", "out": [1], "at": {"value": one}},
            {"op": "array", "out": [2], "at": {"value": one}},
            {"op": "attach_grad", "in": [1], "at": {"grad_req": "null"}},
            {"op": "attach_grad", "in": [2]},
            {"op": "mul_scalar", "in": [1], "out": [3], "at": {"scalar": 5}, "mode": 3},
            {"op": "greater_scalar", "in": [2], "out": [4], "at": {"scalar": 0}, "mode": 3},
        ]
    )
    assert r.status_code == 200 and "error" not in r.json(), r.text
    r = batch.post([{"op": "backward", "in": [3]}])
    assert r.status_code == 400 and r.json()["error"]["kind"] == "AutogradError"
    assert "no inputs in computation graph" in r.json()["error"]["message"]
    r = batch.post([{"op": "grad_of", "in": [3], "out": [9], "at": {"variables": [2]}}])
    assert r.status_code == 400 and "1-th variable because it is unreachable" in r.json()["error"]["message"]
    assert batch.post([{"op": "grad", "in": [2], "out": [5]}]).status_code == 200  # 5: the gradient buffer
    batch.post([{"op": "update", "in": [5], "at": {"fn": "add", "scalar": 7}}])
    assert batch.read(5) == [[7.0, 7.0]]
    r = batch.post([{"op": "backward", "in": [4]}])  # x > 0: x is in the graph, no gradient flows
    assert r.status_code == 200 and "error" not in r.json(), r.text
    assert batch.read(5) == [[0.0, 0.0]]


def test_a_chunked_json_body_past_the_limit_is_refused_as_it_comes():
    """A chunked body declares no length: the JSON routes count it as it arrives."""
    from gradserve.server import Settings

    from .conftest import LiveServer

    with LiveServer(Settings(max_body_bytes=4096)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        sid = http.post("/v1/sessions").json()["id"]

        def body():
            yield b'{"ops": ['
            for _ in range(2000):
                yield b'{"op": "free", "in": []},'
            yield b'{"op": "free", "in": []}]}'

        r = http.post(f"/v1/sessions/{sid}/batch", content=body(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["kind"] == "QuotaExceeded"
        small = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "free", "in": []}]})
        assert small.status_code == 200


def test_the_frameworks_own_refusals_have_the_error_shape(live_server, http, sid):
    for r, status in (
        (http.get("/no/such/route"), 404),
        (http.delete("/v1/health"), 405),
        (http.get(f"/v1/sessions/{sid}/arrays/not-a-number"), 400),
    ):
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["kind"] == "InvalidInput" and err["message"], err


def test_the_openapi_document_and_the_docs_pages_name_a_proxys_prefix_as_fastapis_own_do():
    """/openapi.json is a route of the app's (the metrics name it): behind a proxy's root_path
    its document names the prefix among its servers, as FastAPI's own route did, and the docs
    pages load it and their scripts under the prefix."""
    import asyncio

    app = create_app(Settings())

    async def servers(root_path: str) -> object:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, root_path=root_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                r = await c.get("/openapi.json")
                assert r.status_code == 200 and "/v1/sessions/{sid}/batch" in r.json()["paths"]
                for page in ("/docs", "/redoc"):  # their links carry the prefix too
                    html = (await c.get(page)).text
                    assert f"'{root_path}/openapi.json'" in html or f'"{root_path}/openapi.json"' in html
                    assert f"{root_path}/docs-assets/" in html
                return r.json().get("servers")

    assert asyncio.run(servers("/lab")) == [{"url": "/lab"}]
    assert asyncio.run(servers("")) is None


def test_the_openapi_schema_resolves_and_documents_every_body(live_server):
    schema = httpx.get(f"{live_server.url}/openapi.json").json()
    defs = schema["components"]["schemas"]
    refs: set[str] = set()

    def walk(o: object) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "$ref":
                    refs.add(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(schema)
    assert refs and all(r.split("/")[-1] in defs for r in refs), sorted(refs)
    paths = schema["paths"]
    for path, method in [
        ("/v1/sessions/{sid}/batch", "post"),
        ("/v1/sessions/{sid}/arrays/{h}", "put"),
        ("/v1/sessions/{sid}/ops/{name}", "post"),
        ("/v1/sessions/{sid}/backward", "post"),
        ("/v1/sessions/{sid}/arrays/{h}/attach_grad", "post"),
    ]:
        assert "requestBody" in paths[path][method], (method, path)
    for ops in paths.values():
        for op in ops.values():
            assert "422" not in op["responses"]  # refusals are 400s with the error shape
    assert set(defs["Instruction"]["properties"]) == {"op", "in", "out", "at", "mode"}
    from gradserve.engine.optable import DTYPES

    assert set(defs["Tensor"]["properties"]["dtype"]["enum"]) == DTYPES  # the schema's dtypes are the engine's
    # what a client generated from the schema needs: the key, the error shapes, the bodies read
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert paths["/v1/sessions/{sid}/batch"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in paths["/v1/health"]["get"]
    batch_400 = paths["/v1/sessions/{sid}/batch"]["post"]["responses"]["400"]["content"]["application/json"]
    assert {r["$ref"].split("/")[-1] for r in batch_400["schema"]["anyOf"]} == {"BatchReply", "ErrorReply"}
    assert "413" in paths["/v1/sessions/{sid}/arrays/{h}"]["put"]["responses"]
    got = paths["/v1/sessions/{sid}/arrays/{h}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert got["schema"]["$ref"].endswith("/Tensor")
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    for status in ("400", "404", "413"):  # (an op's error comes back with the reply, at its status)
        assert (
            "anyOf"
            in paths["/v1/sessions/{sid}/batch"]["post"]["responses"][status]["content"]["application/json"]["schema"]
        )
    op_200 = paths["/v1/sessions/{sid}/ops/{name}"]["post"]["responses"]["200"]["content"]["application/json"]
    assert set(op_200["schema"]["properties"]) == {"out", "values"}
    assert "content" not in paths["/v1/sessions/{sid}/arrays/{h}"]["put"]["responses"]["201"]


def test_the_api_pages_load_nothing_from_outside(http):
    """/docs and /redoc took their scripts from a CDN: a lab server with no way out showed a
    blank page. Their files are the server's own now."""
    import re

    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        r = http.get(page)
        assert r.status_code == 200 and f"/docs-assets/{script}" in r.text
        assert not re.findall(r"https?://", r.text), page
        assert http.get(f"/docs-assets/{script}").status_code == 200


def test_a_newcomers_mistakes_get_messages_that_say_what_to_do(http, sid):
    base = f"/v1/sessions/{sid}"
    r = http.post(f"{base}/batch", json={"ops": [{"op": "ones", "at": {"shape": [2]}}]})
    assert r.status_code == 400 and "give its handle as 'out': [h]" in r.json()["error"]["message"]
    assert (
        http.post(f"{base}/batch", json={"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]}).status_code == 200
    )
    r = http.post(f"{base}/batch", json={"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    assert "already in use (free it first, or name another)" in r.json()["error"]["message"]
    r = http.post(f"{base}/ops/read", json={"in": [1], "out": []})  # (it answered 200 and dropped the values)
    assert r.status_code == 400 and "GET /arrays/{h}" in r.json()["error"]["message"]


def test_rest_routes_refuse_wrong_types_and_answer_in_the_batch_error_shape(http, sid):
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json={"dtype": "float32", "shape": [3], "data": [-1, 0, 1]}).status_code == 201
    for body in (
        {"in": [True], "out": [3], "at": {"scalar": 2}},
        {"in": [1], "out": ["3"], "at": {"scalar": 2}},
        {"in": [1], "out": [3], "at": {"scalar": 2}, "mode": "1"},
        {"in": [1], "out": [3], "at": {"scalar": 2}, "read": "yes"},
        {"in": [1.0], "out": [3], "at": {"scalar": 2}},
    ):
        r = http.post(f"{base}/ops/mul_scalar", json=body)
        assert r.status_code == 400 and r.json()["error"]["kind"] == "InvalidInput", (body, r.text)
    assert http.post(f"{base}/backward", json={"heads": [True]}).status_code == 400
    assert http.post("/v1/sessions", json={"seed": True}).status_code == 400
    batch = [
        {"op": "read", "in": [True]},
        {"op": "mul_scalar", "in": [True], "out": [4], "at": {"scalar": 2.0}},
        {"op": "mul_scalar", "in": [1], "out": [4], "at": {"scalar": 2.0}, "mode": True},
        {"op": "attach_grad", "in": [1], "mode": "3"},
    ]
    for ins in batch:
        r = http.post(f"{base}/batch", json={"ops": [ins]})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "InvalidInput", (ins, r.text)
    r = http.get(f"{base}/arrays/1/grad")
    err = r.json()["error"]
    assert r.status_code == 400 and err["op"] == "read" and err["index"] == 0
    assert err["message"].count("read:") == 1
    info = http.get(base).json()
    assert info["arrays"] == 1  # nothing refused changed the session


def test_json_lists_carry_non_finite_floats_as_strings(http, sid):
    base = f"/v1/sessions/{sid}"
    t = {"dtype": "float32", "shape": [4], "data": ["NaN", "Infinity", "-Infinity", 1.5]}
    assert http.put(f"{base}/arrays/1", json=t).status_code == 201
    assert http.get(f"{base}/arrays/1").json()["data"] == ["NaN", "Infinity", "-Infinity", 1.5]
    r = http.post(f"{base}/ops/log", json={"in": [1], "out": [2], "read": True})
    assert r.json()["values"][0]["data"][2:] == ["NaN", 0.4054651]  # (float32, written shortest)
    for data, why in (([None], "None"), (["1e3"], "'1e3'"), (["nan"], "'nan'")):
        r = http.put(f"{base}/arrays/3", json={"dtype": "float32", "shape": [1], "data": data})
        assert r.status_code == 400 and why in r.json()["error"]["message"], r.text
    r = http.put(f"{base}/arrays/3", json={"dtype": "int32", "shape": [1], "data": [10**10]})
    assert r.status_code == 400 and "range of int32" in r.json()["error"]["message"]
    r = http.put(f"{base}/arrays/3", json={"dtype": "int32", "shape": [1], "data": ["NaN"]})
    assert r.status_code == 400
    assert http.get(base).json()["arrays"] == 2


def test_an_error_does_not_echo_a_huge_input(http, sid):
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": [{"op": "y" * 1_000_000}]})
    assert r.status_code == 400 and len(r.content) < 5000
    assert r.json()["error"]["op"].startswith("yyy") and r.json()["error"]["kind"] == "InvalidInput"


def test_a_metrics_key_of_other_characters_is_refused_not_a_fault():
    keys = {"alice-key-0123456789": "alice"}
    with LiveServer(Settings(api_keys=keys, metrics_key="scraper-key-0123456789")) as srv:
        r = httpx.get(f"{srv.url}/metrics", headers={"authorization": "Bearer café-key-0123456789".encode()})
        assert r.status_code == 401


def test_the_binary_batch_route_does_not_echo_a_huge_input(live_server):
    from gradserve.engine import wire

    sid = httpx.post(f"{live_server.url}/v1/sessions").json()["id"]
    body = wire.pack({"seq": "A" * 200_000, "ops": []})
    r = httpx.post(f"{live_server.url}/v1/sessions/{sid}/batch", content=body, headers={"content-type": wire.MSGPACK})
    assert 400 <= r.status_code < 500 and len(r.content) < 5000


def test_large_json_is_read_and_written_off_the_event_loop(live_server, http, sid, monkeypatch):
    """A JSON body or reply of many numbers takes up to seconds to decode or encode: in a
    thread, so that other requests (other users') are not kept waiting meanwhile."""
    import threading

    from gradserve.engine import wire

    where: list[tuple[str, threading.Thread, int]] = []
    for name in ("loads", "dumps"):
        real = getattr(wire, name)

        def spy(data, *args, _real=real, _name=name, **kwargs):
            out = _real(data, *args, **kwargs)
            where.append((_name, threading.current_thread(), len(data if _name == "loads" else out)))
            return out

        monkeypatch.setattr(wire, name, spy)
    a = np.random.default_rng(3).standard_normal(100_000).astype(np.float32)
    t = {"dtype": "float32", "shape": [a.size], "data": a.tolist()}
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json=t).status_code == 201
    assert np.array_equal(np.array(http.get(f"{base}/arrays/1").json()["data"], np.float32), a)
    r = http.post(f"{base}/ops/negative", json={"in": [1], "out": [2], "read": True})
    assert np.array_equal(np.array(r.json()["values"][0]["data"], np.float32), -a)
    r = http.post(
        f"{base}/batch", json={"ops": [{"op": "array", "out": [3], "at": {"value": t}}, {"op": "read", "in": [3]}]}
    )
    assert np.array_equal(np.array(r.json()["values"][0]["data"], np.float32), a)
    r = http.post(  # the binary route, answering in JSON
        f"{base}/batch",
        content=msgpack.packb({"ops": [{"op": "read", "in": [1]}]}),
        headers={"content-type": "application/msgpack", "accept": "application/json"},
    )
    assert np.array_equal(np.array(r.json()["values"][0]["data"], np.float32), a)
    large = [(name, thread) for name, thread, n in where if n > 1 << 20]
    assert [name for name, _ in large] == ["loads", "dumps", "dumps", "loads", "dumps", "dumps"]
    assert all(thread is not live_server.thread for _, thread in large), large


def test_a_large_json_upload_is_exact_and_refused_as_a_small_one_is(http, sid):
    """Large bodies read their numbers straight into arrays (``wire._NumbersFirst``): the
    values are orjson's, and what orjson's path refuses is refused the same way."""
    from gradserve.engine import wire

    base = f"/v1/sessions/{sid}"
    n = wire.NUMBERS_FIRST_BYTES // 8
    a = np.random.default_rng(4).standard_normal(n) * 1e3
    for h, dtype in enumerate(("float32", "float64", "int32", "uint8"), 10):
        want = a.astype(dtype) if dtype[0] == "f" else np.abs(a).astype(dtype)
        t = {"dtype": dtype, "shape": [2, n // 2], "data": want.tolist()}
        assert http.put(f"{base}/arrays/{h}", json=t).status_code == 201
        got = http.get(f"{base}/arrays/{h}", headers={"accept": "application/json; tensors=base64"}).json()
        assert got["shape"] == [2, n // 2] and got["dtype"] == dtype
        assert np.array_equal(np.frombuffer(wire._b64decode(got["data"]), dtype), want), dtype
    n = wire.NUMBERS_FIRST_BYTES // 2  # (small integers: about 40 KB of JSON)
    big = [k % 256 for k in range(n)]
    for data, why in (
        ([*big[:-2], [1, 2]], "not a list of numbers"),  # a list in the list: n values, still refused
        ([*big[:-1], 300], "range of uint8"),
        ([*big[:-1], "NaN"], "'NaN'"),
    ):
        r = http.put(
            f"{base}/arrays/2", json={"dtype": "uint8" if why != "'NaN'" else "int32", "shape": [n], "data": data}
        )
        assert r.status_code == 400 and why in r.json()["error"]["message"], r.text
    assert http.get(base).json()["arrays"] == 4


def test_a_json_batch_of_many_instructions_is_validated_off_the_event_loop(live_server, http, sid, monkeypatch):
    import threading

    from gradserve.server import app as app_module

    where: list[threading.Thread] = []
    real = app_module.validated_batch

    def spy(msg):
        where.append(threading.current_thread())
        return real(msg)

    monkeypatch.setattr(app_module, "validated_batch", spy)
    ops = [{"op": "ones", "out": [1], "at": {"shape": [1]}}] + [{"op": "free", "in": [99]} for _ in range(999)]
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": ops})
    assert r.status_code == 200, r.text  # (freeing a handle that is not there is no error)
    r = http.post(f"/v1/sessions/{sid}/batch", json={"ops": ops[:1]})
    assert len(where) == 2 and where[0] is not live_server.thread and where[1] is live_server.thread


def _post_batch(http, sid, msg, encoding):
    """A batch in JSON or msgpack (raw little-endian tensors), its reply's values as lists."""
    import numpy as np

    if encoding == "json":
        r = http.post(f"/v1/sessions/{sid}/batch", json=msg)
        assert r.status_code == 200, r.text
        return [(v["shape"], v["data"]) for v in r.json()["values"]]
    body = msgpack.packb(msg)
    r = http.post(
        f"/v1/sessions/{sid}/batch",
        content=body,
        headers={"content-type": "application/msgpack", "accept": "application/msgpack"},
    )
    assert r.status_code == 200, r.content
    return [(v["shape"], np.frombuffer(v["data"], v["dtype"]).tolist()) for v in msgpack.unpackb(r.content)["values"]]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_mod_ops_over_json_and_msgpack(http, sid, encoding):
    """mod, broadcast_mod, mod_scalar, rmod_scalar and the in-place update, with a backward
    pass: the values and gradients MXNet 1.9.1 gave."""
    import numpy as np

    def t(values, shape, dtype="float32"):
        a = np.asarray(values, dtype)
        return tensor(a.tolist() if encoding == "json" else a.astype(a.dtype.newbyteorder("<")).tobytes(), shape, dtype)

    ops = [
        {"op": "array", "out": [1], "at": {"value": t([-7, 7, 5.5, -5.5], [1, 4])}},
        {"op": "array", "out": [2], "at": {"value": t([2, -2, 3, -3], [4])}},
        {"op": "attach_grad", "in": [2]},
        {"op": "broadcast_mod", "in": [1, 2], "out": [3], "mode": 3},
        {"op": "backward", "in": [3]},
        {"op": "mod_scalar", "in": [1], "out": [4], "at": {"scalar": 2}},
        {"op": "rmod_scalar", "in": [2], "out": [5], "at": {"scalar": -4}},
        {"op": "update", "in": [1, 2], "at": {"fn": "mod"}},
        {"op": "array", "out": [6], "at": {"value": t([-7, 7], [2], "int32")}},
        {"op": "update", "in": [6], "at": {"fn": "mod", "scalar": -2}},
        {"op": "read", "in": [3, 4, 5, 1, 6]},
        {"op": "read", "in": [2], "at": {"grad": True}},
    ]
    got = _post_batch(http, sid, {"seq": 1, "ops": ops}, encoding)
    assert got == [
        ([1, 4], [1, -1, 2.5, -2.5]),
        ([1, 4], [1, 1, 1.5, 0.5]),
        ([4], [0, 0, 2, -1]),
        ([1, 4], [1, -1, 2.5, -2.5]),
        ([2], [-1, -1]),
        ([4], [4, 4, -1, -1]),
    ]


def test_sort_and_topk_take_a_null_axis_over_json(http, batch):
    """axis null flattens, as MXNet's axis=None; the catalog says the attribute takes null."""
    ops = {o["name"]: o for o in http.get("/v1/ops").json()["ops"]}
    for name in ("sort", "argsort", "topk"):
        assert {"name": "axis", "type": "int", "default": -1, "nullable": True} in ops[name]["attrs"]
    r = batch.post(
        [
            {"op": "array", "out": [1], "at": {"value": tensor([3, 1, 2, 0, 5, 4], [2, 3])}},
            {"op": "sort", "in": [1], "out": [2], "at": {"axis": None, "is_ascend": False}},
            {"op": "topk", "in": [1], "out": [3], "at": {"axis": None, "k": 2, "dtype": "int32"}},
            {"op": "read", "in": [2, 3]},
        ]
    )
    assert r.status_code == 200, r.text
    assert r.json()["values"] == [tensor([5, 4, 3, 2, 1, 0], [6]), tensor([4, 5], [2], "int32")]
    r = batch.post([{"op": "argmax", "in": [1], "out": [4], "at": {"keepdims": None}}])
    assert r.status_code == 400 and "keepdims" in r.json()["error"]["message"]  # (not nullable: refused)


def test_a_boolean_index_array_is_refused_over_json(batch):
    """As MXNet's NDArrays refuse boolean indexing: in getitem and setitem, nothing written."""
    assert (
        batch.post(
            [
                {"op": "array", "out": [1], "at": {"value": tensor([1, 2, 3, 4], [2, 2])}},
                {"op": "array", "out": [2], "at": {"value": tensor([True, False], [2], "bool")}},
            ]
        ).status_code
        == 200
    )
    for op in (
        {"op": "getitem", "in": [1, 2], "out": [3], "at": {"key": [{"array": 0}]}},
        {"op": "setitem", "in": [1, 2], "at": {"key": [{"array": 0}], "scalar": 0, "indices": 1}},
    ):
        r = batch.post([op])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["kind"] == "BooleanIndexError" and "boolean indexing" in err["message"]
    assert batch.read(1) == [[1, 2, 3, 4]]


@pytest.mark.parametrize("as_msgpack", [False, True])
def test_array_samplers_take_their_parameters_by_handle(batch, as_msgpack):
    """sample_normal's mu and sigma are op inputs (handles), in JSON and msgpack alike; a
    parameter out of range is a 400 whose JSON body says which and where."""
    ops = [
        {"op": "array", "out": [1], "at": {"value": tensor([0, 100], [2])}},
        {"op": "array", "out": [2], "at": {"value": tensor([1, 0], [2])}},
        {"op": "sample_normal", "in": [1, 2], "out": [3], "at": {"shape": [3]}},
        {"op": "read", "in": [3]},
    ]
    batch.seq += 1
    if as_msgpack:
        r = batch.http.post(
            f"/v1/sessions/{batch.sid}/batch",
            content=msgpack.packb({"seq": batch.seq, "ops": ops}),
            headers={"content-type": "application/msgpack"},
        )
    else:
        r = batch.post(ops, seq=batch.seq)
    assert r.status_code == 200, r.text
    v = r.json()["values"][0]
    assert v["shape"] == [2, 3] and v["dtype"] == "float32"
    bad = batch.post(
        [
            {"op": "array", "out": [4], "at": {"value": tensor([1, -1], [2])}},
            {"op": "sample_gamma", "in": [4, 4], "out": [5]},
        ]
    )
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert (
        err["kind"] == "InvalidInput" and "alpha must be positive and finite, got -1.0 at index [1]" in err["message"]
    )


def test_a_define_with_an_id_that_is_not_an_integer_is_a_400_once_the_session_has_programs(batch):
    """The batch's count of its calls' steps reads each define's id before the batch runs: an id
    of any type is the define's own error there, as in a session without programs."""
    program = [{"op": "negative", "in": [-1], "out": [-2]}]
    define = {"op": "define", "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": program}}
    r = batch.post([{"op": "array", "out": [1], "at": {"value": tensor([1, 2], [2])}}, define])
    assert r.status_code == 200, r.text
    for ins in (
        {"op": "define", "at": {"id": [2]}},
        {"op": "define", "at": {"id": {"a": 1}, "nargs": 1, "outputs": [-2], "program": program}},
        {"op": "forget", "at": {"ids": [[1]]}},
        {"op": "call", "in": [1], "out": [2], "at": {"id": [1]}},
    ):
        r = batch.post([ins, {"op": "call", "in": [1], "out": [3], "at": {"id": 1}}])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["kind"] == "InvalidInput" and err["index"] == 0 and err["op"] == ins["op"], err
    r = batch.post([{"op": "call", "in": [1], "out": [2], "at": {"id": 1}}, {"op": "read", "in": [2]}])
    assert r.status_code == 200 and r.json()["values"][0]["data"] == [-1, -2]  # program 1 is as it was


def test_no_op_makes_an_array_of_more_axes_than_the_bound(batch):
    """getitem's new axes (and expand_dims, stack, dot...) past MAX_NDIM are refused when the
    result's shape is inferred, as array, reshape and zeros refuse such a shape."""
    from gradserve.engine.optable import MAX_NDIM

    r = batch.post(
        [
            {"op": "array", "out": [1], "at": {"value": tensor([1, 2], [2])}},
            {"op": "getitem", "in": [1], "out": [2], "at": {"key": [None] * (MAX_NDIM - 1)}},
        ]
    )
    assert r.status_code == 200, r.text
    for ins in (
        {"op": "getitem", "in": [1], "out": [9], "at": {"key": [None] * 40}},
        {"op": "getitem", "in": [2], "out": [9], "at": {"key": [None]}},
        {"op": "expand_dims", "in": [2], "out": [9], "at": {"axis": 0}},
        {"op": "stack", "in": [2, 2], "out": [9]},
        {"op": "dot", "in": [2, 2], "out": [9], "at": {"transpose_b": True}},
    ):
        r = batch.post([ins, {"op": "sort", "in": [9], "out": [10]}])
        assert r.status_code == 400, (ins, r.text)
        err = r.json()["error"]
        assert err["kind"] == "ShapeError" and err["index"] == 0 and f"limit of {MAX_NDIM}" in err["message"]
    assert batch.http.get(f"/v1/sessions/{batch.sid}").json()["arrays"] == 2


def test_the_python_api_refuses_too_many_axes_at_the_call(mode):
    from gradserve import nd
    from gradserve.engine.errors import ShapeError

    x = nd.ones((2,))
    with pytest.raises(ShapeError, match="limit of 32"):
        x[(None,) * 40]
    assert x[(None,) * 31].shape == (1,) * 31 + (2,)


def test_a_single_op_with_read_that_fails_changes_nothing(http, sid):
    """``read`` asks for the values of the op's ``out``: a command that makes no outputs
    (setitem, free, ...) is refused before it runs, not run and then answered 404."""
    from gradserve.engine.session import COMMANDS
    from gradserve.server.rest import MAKES_OUT

    assert MAKES_OUT <= set(COMMANDS)
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json=tensor([1, 2, 3], [3])).status_code == 201
    for name, body in (
        ("setitem", {"in": [1], "out": [5], "at": {"key": [], "scalar": 7}, "read": True}),
        ("free", {"in": [1], "out": [1], "read": True}),
        ("attach_grad", {"in": [1], "out": [1], "read": True}),
        ("mul_scalar", {"in": [1], "out": [], "at": {"scalar": 2}, "read": True}),
    ):
        r = http.post(f"{base}/ops/{name}", json=body)
        assert r.status_code == 400, (name, r.text)
        err = r.json()["error"]
        assert err["kind"] == "InvalidInput" and "read" in err["message"], err
    assert http.get(f"{base}/arrays/1").json()["data"] == [1, 2, 3]
    assert http.get(base).json()["arrays"] == 1
    assert http.post(f"{base}/arrays/1/attach_grad").status_code == 204
    r = http.post(f"{base}/ops/grad", json={"in": [1], "out": [2], "read": True})
    assert r.status_code == 200 and r.json() == {"out": [2], "values": [tensor([0.0, 0.0, 0.0], [3])]}
    r = http.post(f"{base}/ops/mul_scalar", json={"in": [1], "out": [3], "at": {"scalar": 2}, "read": True})
    assert r.status_code == 200 and r.json()["values"] == [tensor([2.0, 4.0, 6.0], [3])]
    r = http.post(f"{base}/ops/mul_scalar", json={"in": [1], "out": [3], "at": {"scalar": 2}, "read": True})
    assert r.status_code == 400 and "already in use" in r.json()["error"]["message"]


def _frames_body(tensors, refs):
    """A frames body of ``array`` instructions whose tensors point at ``refs`` ((offset, length)
    pairs) in ``tensors``' bytes, laid out as ``wire.pack_frames`` lays them out."""
    from gradserve.engine import wire

    ops = [
        {
            "op": "array",
            "out": [k + 1],
            "at": {"value": {"dtype": "float32", "shape": [n // 4], "data": msgpack.ExtType(1, wire._REF.pack(o, n))}},
        }
        for k, (o, n) in enumerate(refs)
    ]
    head = msgpack.packb({"ops": ops})
    first = -(-(4 + len(head)) // 64) * 64
    return wire._HEAD.pack(len(head)) + head + bytes(first - 4 - len(head)) + tensors


def test_frames_whose_tensors_share_bytes_are_refused(live_server, http, sid):
    """Two tensors of a frames body pointing at the same bytes would be two arrays of one
    memory (a large tensor is used in place): refused; tensors side by side, or empty ones at
    one offset, are not."""
    from gradserve.engine import wire
    from gradserve.engine.errors import InvalidInput

    data = np.arange(1 << 16, dtype="<f4").tobytes()
    for refs in ([(0, len(data)), (0, len(data))], [(0, 4096), (4092, 4096)]):
        body = _frames_body(data, refs)
        with pytest.raises(InvalidInput, match="overlap"):
            wire.unpack_frames(bytearray(body))
        r = http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": wire.FRAMES})
        assert r.status_code == 400 and "overlap" in r.json()["error"]["message"], r.text
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 0
    ok = _frames_body(data, [(0, 4096), (4096, 4096), (8192, 0), (8192, 0)])
    r = http.post(f"/v1/sessions/{sid}/batch", content=ok, headers={"content-type": wire.FRAMES})
    assert r.status_code == 200, r.text
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 4


@pytest.mark.parametrize("encoding", ["msgpack", "frames"])
def test_binary_batches_refuse_a_mode_outside_0_to_3_and_unknown_fields(http, sid, encoding):
    """What the JSON schema refuses, the engine refuses on every route: a mode that is not 0..3
    (negative ones had acted as recording and training), fields an instruction has not."""
    from gradserve.engine import wire

    def post(ops):
        if encoding == "msgpack":
            body, ctype = msgpack.packb({"ops": ops}), wire.MSGPACK
        else:
            parts, _ = wire.pack_frames({"ops": ops})
            body, ctype = b"".join(bytes(p) for p in parts), wire.FRAMES
        return http.post(f"/v1/sessions/{sid}/batch", content=body, headers={"content-type": ctype})

    assert post([{"op": "ones", "out": [1], "at": {"shape": [2]}}]).status_code == 200
    program = [{"op": "negative", "in": [-1], "out": [-2]}]
    for m in (4, -1, 7, 2**64 - 1, True, 1.0, None):
        for ins in (
            {"op": "mul_scalar", "in": [1], "out": [2], "at": {"scalar": 2}, "mode": m},
            {"op": "attach_grad", "in": [1], "mode": m},
            {"op": "read", "in": [1], "mode": m},  # (a batch's last reads take a path of their own)
            {"op": "define", "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": [{**program[0], "mode": m}]}},
        ):
            r = post([ins])
            assert r.status_code == 400, (ins, r.text)
            err = r.json()["error"]
            assert err["kind"] == "InvalidInput" and "mode is 0, 1" in err["message"] and repr(m) in err["message"]
    for ins in (
        {"op": "mul_scalar", "in": [1], "out": [2], "at": {"scalar": 2}, "mdoe": 3},
        {"op": "ones", "out": [2], "at": {"shape": [2]}, "bogus": 1},
        {"op": "free", "in": [1], "ins": [1]},
        {"op": "read", "in": [1], "x": 1},
        {"op": "define", "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": [{**program[0], "x": 0}]}},
    ):
        r = post([ins])
        assert r.status_code == 400, (ins, r.text)
        assert "unknown instruction fields" in r.json()["error"]["message"], r.text
    assert http.get(f"/v1/sessions/{sid}").json()["arrays"] == 1
    r = post([{"op": "mul_scalar", "in": [1], "out": [2], "at": {"scalar": 2}, "mode": 0}, {"op": "read", "in": [2]}])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "h", ["1_0", " 10", "10 ", "+11", "99999999999999999999999", "9223372036854775808", "１０", "-", "0x1"]
)
def test_a_handle_in_a_path_is_plain_decimal_digits(http, sid, h):
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/10", json=tensor([1], [1])).status_code == 201
    for method, path in (
        ("PUT", f"arrays/{h}"),
        ("GET", f"arrays/{h}"),
        ("DELETE", f"arrays/{h}"),
        ("GET", f"arrays/{h}/grad"),
    ):
        r = http.request(method, f"{base}/{path}", json=tensor([2], [1]) if method == "PUT" else None)
        assert r.status_code == 400 and r.json()["error"]["kind"] == "InvalidInput", (method, h, r.text)
    assert http.get(f"{base}/arrays/10").json()["data"] == [1]
    assert http.get(base).json()["arrays"] == 1
    assert (
        http.get(f"{base}/arrays/-3").json()["error"]["kind"] == "UnknownHandle"
    )  # (an integer: the engine's to refuse)


def test_head_of_health_and_weighted_accept_headers(http, sid):
    r = http.head("/v1/health")
    assert r.status_code == 200 and r.content == b""
    base = f"/v1/sessions/{sid}"
    assert http.put(f"{base}/arrays/1", json=tensor([1, 2], [2])).status_code == 201
    no_msgpack = {"accept": "application/msgpack;q=0, application/json"}
    r = http.get(f"{base}/arrays/1", headers=no_msgpack)
    assert r.headers["content-type"] == "application/json" and r.json()["data"] == [1, 2]
    for ctype in ("application/msgpack", "application/vnd.gradserve.frames"):
        if ctype == "application/msgpack":
            body = msgpack.packb({"ops": [{"op": "read", "in": [1]}]})
        else:
            from gradserve.engine import wire

            body = b"".join(bytes(p) for p in wire.pack_frames({"ops": [{"op": "read", "in": [1]}]})[0])
        headers = {"content-type": ctype}
        r = http.post(f"{base}/batch", content=body, headers={**headers, **no_msgpack})
        assert r.headers["content-type"] == "application/json" and r.json()["values"][0]["data"] == [1, 2], r.text
        r = http.post(
            f"{base}/batch", content=body, headers={**headers, "accept": "application/json;q=0.5, application/msgpack"}
        )
        assert r.headers["content-type"] == "application/msgpack"
        assert msgpack.unpackb(r.content)["values"][0]["shape"] == [2]


@pytest.mark.parametrize(
    "ins, message",
    [
        ({"op": "sgd_update", "in": [1, 2], "out": [20], "at": {"lr": 0.1}}, "sgd_update makes no arrays"),
        ({"op": "sgd_update", "in": [1, 2], "out": [2], "at": {"lr": 0.1}}, "sgd_update makes no arrays"),
        ({"op": "update", "in": [1], "out": [20], "at": {"fn": "add", "scalar": 1}}, "update makes no arrays"),
        ({"op": "setitem", "in": [1], "out": [20], "at": {"scalar": 1}}, "setitem makes no arrays"),
        ({"op": "attach_grad", "in": [1], "out": [20]}, "attach_grad makes no arrays"),
        ({"op": "seed", "in": [1, 2], "at": {"seed": 3}}, "seed takes no input handles"),
        ({"op": "forget", "in": [1], "at": {"ids": [1]}}, "forget takes no input handles"),
        ({"op": "setitem", "in": [1, 2], "at": {"scalar": 5}}, "setitem takes a value handle or a scalar, not both"),
        ({"op": "update", "in": [1, 2], "at": {"fn": "add", "scalar": 5}}, "update takes a value handle or a scalar"),
    ],
)
def test_a_command_refuses_handles_it_would_pass_over(batch, ins, message):
    """``out`` on a command that changes its inputs in place (MXNet's sgd_update returns a new
    array: a client that expects one would read a handle never made, or one left as it was,
    while its weight changed), and ``in`` on one that takes none, are refused before anything
    changes."""
    ok = batch.post(
        [
            {"op": "array", "out": [1], "at": {"value": tensor([1.0, 2.0], [2])}},
            {"op": "array", "out": [2], "at": {"value": tensor([1.0, 1.0], [2])}},
        ]
    )
    assert ok.status_code == 200, ok.text
    r = batch.post([ins])
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    assert batch.read(1, 2) == [[1.0, 2.0], [1.0, 1.0]]
    r = batch.post([{"op": "grad", "in": [1], "out": [3]}])  # (commands that make arrays take out)
    assert r.status_code == 400 and "no gradient attached" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "ins, message",
    [
        ({"op": "moveaxis", "in": [1], "out": [2], "at": {"source": None, "destination": 0}}, "cannot be null"),
        ({"op": "random_normal", "out": [2], "at": {"scale": -1}}, "random_normal: scale must be positive"),
        ({"op": "random_normal", "out": [2], "at": {"loc": "Infinity"}}, "loc and scale finite"),
        ({"op": "random_uniform", "out": [2], "at": {"low": 1, "high": 0}}, "with low <= high, got 1.0, 0.0"),
        ({"op": "random_uniform", "out": [2], "at": {"low": -1e30, "high": "-Infinity"}}, "must be finite"),
    ],
)
def test_an_attribute_out_of_its_domain_is_refused_by_name(batch, ins, message):
    """A null for an attribute that takes none (moveaxis's source said "'NoneType' object is
    not iterable"), and random parameters numpy takes or refuses in its own words (uniform(1,
    0) drew from (0, 1]; MXNet refuses both). A dtype's null is its default, as MXNet's
    (astype's gave float64, MXNet's float32)."""
    ok = batch.post([{"op": "array", "out": [1], "at": {"value": tensor([1.0, 2.0], [2])}}])
    assert ok.status_code == 200, ok.text
    r = batch.post([ins])
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    cast = batch.post([{"op": "astype", "in": [1], "out": [3], "at": {"dtype": None}}, {"op": "read", "in": [3]}])
    assert cast.status_code == 200 and cast.json()["values"][0]["dtype"] == "float32", cast.text


def test_a_bad_session_option_is_named(http):
    r = http.post("/v1/sessions", json={"seed": -1})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("invalid session options at seed: "), r.text
    r = http.post("/v1/sessions", json=[1])
    assert r.status_code == 400 and "invalid session options" in r.json()["error"]["message"]


def test_an_integer_past_int64_is_called_so(http, sid, batch):
    """A JSON integer past 64 bits is read as a float: the error said "must be an integer, got
    1.2089258196146292e+24" of what the client sent as an integer."""
    r = http.post(
        f"/v1/sessions/{sid}/batch",
        content=b'{"seq": 1208925819614629174706176, "ops": []}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "past int64's range" in r.json()["error"]["message"], r.text
    r = http.post(
        f"/v1/sessions/{sid}/batch",
        content=b'{"ops": [{"op": "ones", "out": [1], "at": {"shape": [2], "dtype": "float32"}},'
        b' {"op": "sum", "in": [1], "out": [2], "at": {"axis": 1208925819614629174706176}}]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "past int64's range" in r.json()["error"]["message"], r.text


def test_requests_a_forced_stop_cancels_as_they_wait_for_their_turn_are_refused_as_not_started():
    """A forced stop (a second Ctrl-C) writes the sessions, then closes the event loop on the
    requests still in flight, which cancels them. Those still waiting for their turn (a busy
    session, a reply being written from its arrays) were answered with uvicorn's bare
    plain-text 500 (CancelledError in the log), which says nothing of whether they ran; they
    did not, and get the JSON (or msgpack) 503 ServerStopped of a request that did not start,
    on the binary batch route, the JSON one and the REST conveniences alike."""
    import asyncio

    from gradserve.server import fast

    app = create_app(Settings())
    replies: dict[str, list[dict]] = {}
    sessions: list = []

    async def request(name: str, method: str, path: str, body: object = None, as_msgpack: bool = False) -> None:
        kind = b"application/msgpack" if as_msgpack else b"application/json"
        data = b"" if body is None else msgpack.packb(body) if as_msgpack else json.dumps(body).encode()
        headers = [(b"content-type", kind), (b"accept", kind), (b"content-length", str(len(data)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent = replies[name] = []
        read = [False]

        async def receive() -> dict:
            if read[0]:
                await asyncio.Event().wait()  # (the client says nothing more)
            read[0] = True
            return {"type": "http.request", "body": data, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)

    class Lent(asyncio.Event):
        """A reply being written from a session's arrays: requests for it wait (fast.until_free)."""

        waiting = 0

        async def wait(self) -> bool:
            self.waiting += 1
            return await super().wait()

    async def main() -> None:
        async with app.router.lifespan_context(app):
            state = app.state
            busy, lent = state.store.create("anonymous"), state.store.create("anonymous")
            sessions.extend((busy, lent))
            held = asyncio.Event()

            async def long_batch() -> None:  # holds its session's turn and lock, as one in a thread does
                async with fast._turn(state.gates, busy.id, asyncio.Lock):
                    with busy.lock:
                        held.set()
                        await asyncio.Event().wait()

            holder = asyncio.create_task(long_batch())
            await held.wait()
            state.lent[lent.id] = lent_reply = Lent()
            at, ops = f"/v1/sessions/{busy.id}", [{"op": "ones", "out": [1], "at": {"shape": [2]}}]
            waiting = {
                "msgpack batch": ("POST", f"{at}/batch", {"seq": 1, "ops": ops}, True),
                "json batch": ("POST", f"{at}/batch", {"seq": 1, "ops": ops}, False),
                "put array": ("PUT", f"{at}/arrays/1", tensor([1, 2], [2]), False),
                "get array": ("GET", f"{at}/arrays/1", None, False),
                "delete array": ("DELETE", f"{at}/arrays/1", None, False),
                "op": ("POST", f"{at}/ops/ones", {"out": [1], "at": {"shape": [2]}}, False),
                "op and read": ("POST", f"{at}/ops/ones", {"out": [1], "at": {"shape": [2]}, "read": True}, False),
                "attach_grad": ("POST", f"{at}/arrays/1/attach_grad", None, False),
                "backward": ("POST", f"{at}/backward", {"heads": [1]}, False),
                "grad": ("GET", f"{at}/arrays/1/grad", None, False),
                "msgpack batch, lent": ("POST", f"/v1/sessions/{lent.id}/batch", {"ops": ops}, True),
                "json batch, lent": ("POST", f"/v1/sessions/{lent.id}/batch", {"ops": ops}, False),
            }
            tasks = [asyncio.create_task(request(name, *how)) for name, how in waiting.items()]
            while state.gates[busy.id][1] < 1 + 10 or lent_reply.waiting < 2:  # (all of them wait)
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                await asyncio.sleep(0.001)
        assert state.stopping and state.written.is_set()  # (the shutdown wrote the sessions)
        for t in tasks:  # as the event loop closes on them
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        holder.cancel()

    asyncio.run(main())
    for name, sent in replies.items():
        assert sent, f"{name}: nothing answered (uvicorn's bare 500)"
        start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
        assert start["status"] == 503, (name, start, body)
        kind = dict(start["headers"])[b"content-type"]
        error = (msgpack.unpackb(body) if kind.startswith(b"application/msgpack") else json.loads(body))["error"]
        assert error["kind"] == "ServerStopped" and "did not start" in error["message"], (name, error)
    assert dict(replies["msgpack batch"][0]["headers"])[b"content-type"] == b"application/msgpack"
    assert all(s.seq == 0 and not s.arrays for s in sessions)  # (none of them ran)


def test_what_a_rest_client_gets_wrong_is_told_in_words(http, sid, batch):
    """Findings of a REST user's run: errors that spoke of Python's or numpy's insides, or
    blamed another input, and replies outside the schema."""
    ones = {"op": "ones", "out": [1], "at": {"shape": [2, 3]}}
    w = {"op": "ones", "out": [2], "at": {"shape": [4, 3]}}
    b = {"op": "ones", "out": [3], "at": {"shape": [4]}}
    fc = {"op": "FullyConnected", "in": [1, 2, 3, 3], "out": [4], "at": {"num_hidden": 4}}
    r = batch.post([ones, w, b, fc])  # (it said "give a bias unless no_bias is true")
    assert r.json()["error"]["message"] == "FullyConnected takes at most 3 inputs (data, weight, *bias), got 4"
    assert batch.post([{"op": "attach_grad", "in": [1]}]).status_code == 200
    for head_grads in (5, {}, []):  # (5: "object of type 'int' has no len()"; {} and [] were taken as none)
        r = batch.post([{"op": "backward", "in": [1], "at": {"head_grads": head_grads}}])
        assert r.status_code == 400 and "backward: head_grads must be null or a list of one entry per head" in r.text
        r = batch.post([{"op": "grad_of", "in": [1], "out": [9], "at": {"variables": [1], "head_grads": head_grads}}])
        assert r.status_code == 400 and "grad_of: head_grads must be null" in r.text
    r = batch.post([{"op": "getitem", "in": [1], "out": [5], "at": {"key": ["...", "..."]}}])
    assert r.json()["error"]["kind"] == "InvalidInput"  # (it was an index out of range)
    r = batch.post([{"op": "zeros", "out": [5], "at": {"shape": [1 << 40, 0, 1 << 40]}}])
    assert r.json()["error"] == {
        "kind": "ShapeError",
        "message": f"creation: shape {(1 << 40, 0, 1 << 40)} is too large for an array, even an empty one",
        "index": 0,
        "op": "zeros",
    }
    packed = msgpack.packb({"ops": [{"in": [1]}]})
    r = http.post(f"/v1/sessions/{sid}/batch", content=packed, headers={"Content-Type": "application/msgpack"})
    assert r.json()["error"]["message"] == "malformed instruction: it has no field 'op'"
    r = http.post(f"/v1/sessions/{sid}/batch", content=packed, headers={"Content-Type": "application/x-msgpack"})
    assert r.status_code == 400 and "is read as JSON; Content-Type here: application/x-msgpack" in r.text
    for path in ("/v1/sessions/", f"/v1/sessions/{sid}/arrays/1/"):  # (an empty 307 to the path without it)
        r = http.get(path)
        assert r.status_code == 404 and r.json()["error"]["kind"]
    assert "partial" in http.get("/openapi.json").json()["components"]["schemas"]["ErrorInfo"]["properties"]
    with pytest.raises(ValidationError, match="finite number"):
        Settings(session_ttl_s=float("inf"))  # (its reply said null in JSON, inf in msgpack)
