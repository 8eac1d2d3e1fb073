"""The byte quotas count the memory a session keeps alive: views share their base's count,
gradient buffers count, and an array a recorded graph still needs counts after its handle
is freed. Sessions of one user running batches at the same time keep to the user's limit."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gradserve
from gradserve import nd
from gradserve.engine import backprop, slices
from gradserve.engine.session import NODE_BYTES, Limits, Session

F4 = 4  # bytes in a float32


def run(s: Session, *ops: dict) -> dict:
    reply = s.run_batch({"ops": list(ops)})
    return reply


def ok(s: Session, *ops: dict) -> dict:
    reply = run(s, *ops)
    assert "error" not in reply, reply
    return reply


def ones(h: int, n: int) -> dict:
    return {"op": "ones", "out": [h], "at": {"shape": [n]}}


def free(*hs: int) -> dict:
    return {"op": "free", "in": list(hs)}


def held_memory(s: Session) -> int:
    """The bytes behind every array the session's handles and variables hold, each memory once."""
    seen: dict[int, int] = {}
    for x in s.arrays.values():
        m = x
        while isinstance(m, np.ndarray) and m.base is not None:
            m = m.base
        seen[id(m)] = m.nbytes if isinstance(m, np.ndarray) else memoryview(m).nbytes
    for n in s.nodes.values():
        if n.grad is not None:
            seen[id(n.grad)] = n.grad.nbytes
    return sum(seen.values())


def test_a_view_counts_its_base_after_the_base_is_freed():
    s = Session("v")
    ok(s, ones(1, 1000), {"op": "slice_axis", "in": [1], "out": [2], "at": {"axis": 0, "begin": 0, "end": 1}})
    ok(s, {"op": "getitem", "in": [1], "out": [3], "at": {"key": [[0, 2, None]]}})
    assert s.get(3).base is not None  # a view, as MXNet's basic slicing gives
    assert s.nbytes == 1000 * F4 + F4  # slice_axis copies; the view shares x's count
    ok(s, free(1))
    assert s.nbytes == 1000 * F4 + F4 == held_memory(s)  # x's memory lives on in the view
    ok(s, {"op": "getitem", "in": [3], "out": [4], "at": {"key": [[0, 1, None]]}})  # a view of the view
    assert s.nbytes == 1000 * F4 + F4
    ok(s, free(3))
    assert s.nbytes == 1000 * F4 + F4
    ok(s, free(4))
    assert s.nbytes == F4 == held_memory(s)


def test_views_cannot_hold_more_than_the_quota():
    """Make a large array, keep a one-element view, free the array: again and again. Each
    kept view keeps its whole base alive, so the quota refuses before memory runs away."""
    s = Session("abuse", limits=Limits(max_session_bytes=100_000))
    last: dict = {}
    for k in range(10):
        base, view = 2 * k + 1, 2 * k + 2
        last = run(
            s,
            ones(base, 10_000),  # 40 KB
            {"op": "getitem", "in": [base], "out": [view], "at": {"key": [[0, 1, None]]}},
            free(base),
        )
        if "error" in last:
            break
    assert last["error"]["kind"] == "QuotaExceeded"
    assert s.nbytes == held_memory(s) <= 100_000


def test_a_reshape_of_a_fresh_result_counts_what_it_keeps():
    s = Session("r")
    ok(s, ones(1, 6))
    ok(s, {"op": "reshape", "in": [1], "out": [2], "at": {"shape": [2, 3]}})
    assert s.nbytes == 6 * F4 == held_memory(s)  # reshape shares the input's memory
    ok(s, free(1))
    assert s.nbytes == 6 * F4
    ok(s, free(2))
    assert s.nbytes == 0


def test_gradient_buffers_count_while_anything_holds_them():
    s = Session("g", limits=Limits(max_session_bytes=12_000))
    ok(s, ones(1, 1000), {"op": "attach_grad", "in": [1]})
    assert s.nbytes == 2 * 1000 * F4 == held_memory(s)
    ok(s, {"op": "grad", "in": [1], "out": [2]})
    assert s.nbytes == 2 * 1000 * F4  # a second name for the buffer
    ok(s, free(1))
    assert s.nbytes == 1000 * F4  # the grad handle keeps the buffer, not x
    ok(s, free(2))
    assert s.nbytes == 0
    # two variables take 16 KB with their buffers: the second buffer passes the limit of 12 KB
    reply = run(s, *(op for h in (1, 2, 3) for op in (ones(h, 1000), {"op": "attach_grad", "in": [h]})))
    assert reply["error"]["kind"] == "QuotaExceeded" and reply["error"]["index"] == 3


def test_a_recorded_graph_keeps_its_arrays_counted_until_it_is_freed():
    s = Session("graph")
    ok(s, ones(1, 1000), {"op": "attach_grad", "in": [1]})
    ok(
        s,
        {"op": "exp", "in": [1], "out": [2], "mode": 3},
        {"op": "sum", "in": [2], "out": [3], "mode": 3},
        free(2),  # the graph from 3 still needs exp's output
    )
    assert s.nbytes == 3 * 1000 * F4 + F4
    ok(s, {"op": "backward", "in": [3], "mode": 2})  # frees the graph
    ok(s, {"op": "read", "in": [1], "at": {"grad": True}})
    assert s.nbytes == 2 * 1000 * F4 + F4 == held_memory(s)
    # a graph never run backward: counted while its head is held, not after
    ok(s, {"op": "exp", "in": [1], "out": [4], "mode": 3}, {"op": "sum", "in": [4], "out": [5], "mode": 3}, free(4))
    assert s.nbytes == 3 * 1000 * F4 + 2 * F4
    ok(s, free(5))
    ok(s, {"op": "read", "in": [3]})
    assert s.nbytes == 2 * 1000 * F4 + F4


def test_graphs_held_by_their_heads_cannot_pass_the_quota():
    """Keeping each step's loss while recording (its graph with it) is refused at the quota
    instead of growing without a bound."""
    s = Session("leak", limits=Limits(max_session_bytes=200_000))
    ok(s, ones(1, 5000), {"op": "attach_grad", "in": [1]})  # 40 KB with its buffer
    last: dict = {}
    for k in range(10):
        big, loss = 100 + 2 * k, 101 + 2 * k
        last = run(
            s,
            {"op": "mul_scalar", "in": [1], "out": [big], "at": {"scalar": 2.0}, "mode": 3},
            {"op": "sum", "in": [big], "out": [loss], "mode": 3},
            free(big),
        )
        if "error" in last:
            break
    assert last["error"]["kind"] == "QuotaExceeded"
    assert held_memory(s) <= s.nbytes <= 200_000


def live_nodes(s: Session) -> int:
    """The op nodes of the graphs the session's handles reach, counted by walking them."""
    seen: set[int] = set()
    stack = [n for n in s.nodes.values() if n.op is not None and n.live]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            stack += [p for p in n.parents if p is not None and p.op is not None and p.live]
    return len(seen)


def test_a_graph_of_empty_arrays_counts_its_nodes_and_cannot_pass_the_quota():
    """A node costs the server about a kilobyte whatever its arrays hold: a chain of recorded
    ops on an empty array, each handle freed as the next is made, holds nothing in arrays but
    its nodes, and those count."""
    limit = 1 << 20
    s = Session("chain", limits=Limits(max_session_bytes=limit))
    ok(s, {"op": "zeros", "out": [1], "at": {"shape": [0]}}, {"op": "attach_grad", "in": [1]})
    ops: list[dict] = []
    for h in range(1, 400):
        ops += [{"op": "add_scalar", "in": [h], "out": [h + 1], "at": {"scalar": 1.0}, "mode": 1}]
        ops += [free(h)] if h > 1 else []
    ok(s, *ops)
    assert s.nbytes == 0
    assert s.graph_bytes == 399 * NODE_BYTES == live_nodes(s) * NODE_BYTES
    h, reply = 400, {}
    for _ in range(20):  # batches of 400 more: refused at the limit
        ops = []
        for _ in range(400):
            ops += [{"op": "add_scalar", "in": [h], "out": [h + 1], "at": {"scalar": 1.0}, "mode": 1}, free(h)]
            h += 1
        reply = run(s, *ops)
        if "error" in reply:
            break
    assert reply["error"]["kind"] == "QuotaExceeded"
    assert "recorded graphs' nodes" in reply["error"]["message"]
    assert s.held_bytes() <= limit
    assert live_nodes(s) * NODE_BYTES <= s.graph_bytes <= limit
    ok(s, free(*range(1, h + 2)))  # the chain dies with its last handle: counted again when it matters
    ok(s, ones(2, 1000))
    assert live_nodes(s) == 0 and s.held_bytes() <= limit


def test_a_backward_pass_takes_its_graphs_nodes_off_the_count():
    """A training loop's count stays level: each step's nodes are counted as recorded and
    taken off when its backward pass frees them; a retained graph, a recorded pass
    (create_graph) and a function recorded by a client stay counted while they live."""
    s = Session("steps")
    ok(s, ones(1, 10), {"op": "attach_grad", "in": [1]})
    for k in range(50):
        a, b, c = 10 + 3 * k, 11 + 3 * k, 12 + 3 * k
        ok(
            s,
            {"op": "mul_scalar", "in": [1], "out": [a], "at": {"scalar": 2.0}, "mode": 3},
            {"op": "exp", "in": [a], "out": [b], "mode": 3},
            {"op": "sum", "in": [b], "out": [c], "mode": 3},
            free(a, b),
        )
        assert s.graph_bytes == 3 * NODE_BYTES == live_nodes(s) * NODE_BYTES
        ok(s, {"op": "backward", "in": [c], "mode": 2}, free(c))
        assert s.graph_bytes == 0
    ok(
        s,
        {"op": "exp", "in": [1], "out": [2], "mode": 3},
        {"op": "sum", "in": [2], "out": [3], "mode": 3},
        {"op": "backward", "in": [3], "at": {"retain_graph": True}, "mode": 2},
    )
    assert s.graph_bytes == 2 * NODE_BYTES == live_nodes(s) * NODE_BYTES
    ok(s, {"op": "grad_of", "in": [3], "out": [4], "at": {"variables": [1], "create_graph": True}, "mode": 3})
    assert s.graph_bytes == live_nodes(s) * NODE_BYTES > 2 * NODE_BYTES  # the recorded pass's own nodes too
    ok(s, free(2, 3, 4))
    assert live_nodes(s) == 0
    s.recount_graph()
    assert s.graph_bytes == 0


def test_what_a_node_keeps_besides_its_arrays_counts_with_it():
    """A client's Function keeps its backward program with its nodes: it counts with them
    (and is refused past the room); a string attribute, which a node keeps, is short."""
    limit = 1 << 20
    s = Session("kept", limits=Limits(max_session_bytes=limit))
    ok(s, ones(1, 100), {"op": "attach_grad", "in": [1]}, ones(4, 100), ones(5, 100))
    step = {"op": "mul_scalar", "in": [90], "out": [91], "at": {"scalar": 2.0}}

    def function(out: int, steps: int) -> dict:
        return {
            "op": "record_function",
            "in": [1],
            "at": {"outputs": [out], "cotangents": [90], "gradients": [91], "program": [step] * steps},
        }

    ok(s, function(4, 100))
    assert s.graph_bytes > NODE_BYTES + 100 * 200
    counted = s.graph_bytes
    s.recount_graph()
    assert s.graph_bytes == counted
    err = run(s, function(5, 5_000))["error"]
    assert err["kind"] == "QuotaExceeded" and 5 not in s.nodes and s.graph_bytes == counted
    err = run(s, {"op": "Activation", "in": [1], "out": [6], "at": {"act_type": "relu" * 100}})["error"]
    assert err["kind"] == "InvalidInput" and "at most 256 characters" in err["message"]


def test_a_recorded_backward_pass_is_held_to_the_limit_with_the_nodes_it_made():
    """autograd.grad(create_graph=True) makes a graph of its own (a sin's VJP is several ops):
    its nodes are counted before the room is checked, and a refused pass leaves the count as
    it was."""
    limit = 1 << 20
    s = Session("second-order", limits=Limits(max_session_bytes=limit, max_user_bytes=limit))
    ops: list[dict] = [ones(0, 1), {"op": "attach_grad", "in": [0]}]
    for h in range(1, 900):
        ops += [{"op": "sin", "in": [h - 1], "out": [h], "mode": 1}] + ([free(h - 1)] if h > 1 else [])
    ok(s, *ops)
    before = s.graph_bytes
    assert before == 899 * NODE_BYTES and s.held_bytes() <= limit
    grad = {"op": "grad_of", "in": [899], "out": [5000], "at": {"variables": [0], "create_graph": True}, "mode": 1}
    err = run(s, grad)["error"]
    assert err["kind"] == "QuotaExceeded" and 5000 not in s.arrays
    assert s.graph_bytes == before == live_nodes(s) * NODE_BYTES and s.held_bytes() <= limit


def test_a_users_sessions_running_together_keep_to_the_users_limit():
    """Session a's batch starts; b then takes most of the user's room; a's batch, still
    running, sees it when it next allocates (it read b's bytes at its start before)."""
    user = 1 << 20
    lim = Limits(max_user_bytes=user)
    a, b = Session("a", owner="u", limits=lim), Session("b", owner="u", limits=lim)
    a.user_bytes = lambda: b.nbytes
    b.user_bytes = lambda: a.nbytes
    job = a.begin({"ops": [ones(h, 65_536) for h in (1, 2, 3)]})  # 3 x 256 KiB
    ok(b, *(ones(h, 65_536) for h in (1, 2)))  # 512 KiB while a's batch runs
    job.run()
    reply = job.finish()
    assert reply["error"]["kind"] == "QuotaExceeded" and reply["error"]["index"] == 2
    assert a.nbytes + b.nbytes <= user + 2 * (user // 256)


@pytest.mark.parametrize("pure_slack", [False, True])
def test_the_per_op_path_refreshes_the_users_bytes_as_it_grows(pure_slack):
    """Many small arrays (each under the slack) in one batch while another session fills the
    user's room: the running batch stops within the slack of the limit."""
    user = 1 << 20
    lim = Limits(max_user_bytes=user)
    a, b = Session("a", owner="u", limits=lim), Session("b", owner="u", limits=lim)
    a.user_bytes = lambda: b.nbytes
    b.user_bytes = lambda: a.nbytes
    small = 256 if pure_slack else 512  # floats: 1 or 2 KiB each, under the slack of 4 KiB
    job = a.begin({"ops": [ones(h, small) for h in range(1, 1001)]})
    ok(b, ones(1, 3 * 65_536))  # 768 KiB
    job.run()
    reply = job.finish()
    assert reply["error"]["kind"] == "QuotaExceeded"
    assert a.nbytes + b.nbytes <= user + user // 256


def test_a_retried_batch_gets_copies_of_what_its_reads_lent():
    """A batch's last reads may lend the session's arrays to the reply written after the
    batch; a retry's reply is written after the session is free again, so it gets copies
    (a batch running meanwhile could change the arrays under it)."""
    s = Session("retry")
    msg = {"seq": 1, "ops": [ones(1, 4), {"op": "read", "in": [1]}]}
    first = s.run_batch(msg, copy_reads=False)
    assert np.shares_memory(first["values"][0], s.get(1))  # lent
    again = s.begin(msg, copy_reads=False)
    assert isinstance(again, dict) and again["values"][0].tolist() == [1.0] * 4
    assert not np.shares_memory(again["values"][0], s.get(1))
    ok(s, {"op": "update", "in": [1], "at": {"fn": "add", "scalar": 1.0}})
    assert s.begin(msg)["values"][0].tolist() == [1.0] * 4


def test_arrays_a_graph_reads_count_after_their_handles_are_freed():
    """A constant or a variable fed into a recorded op stays alive in the graph: freeing its
    handle does not stop its count (fed again and again, it was the way past any quota)."""
    s = Session("inputs", limits=Limits(max_session_bytes=1_000_000))
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1000, 1]}}, {"op": "attach_grad", "in": [1]})
    last: dict = {}
    for k in range(10):
        last = run(
            s,
            {"op": "ones", "out": [100 + k], "at": {"shape": [200, 1000]}},  # 800 KB
            {"op": "dot", "in": [100 + k, 1], "out": [200 + k], "mode": 3},
            free(100 + k),
        )
        if "error" in last:
            break
    assert last["error"]["kind"] == "QuotaExceeded" and k == 1
    assert s.nbytes == held_memory(s) + 200 * 1000 * F4  # the freed constant, in the graph
    ok(s, free(*range(200, 210)))  # the heads: their graphs go
    assert s.nbytes == held_memory(s) == 2 * 1000 * F4
    ok(s, free(1))
    assert s.nbytes == 0 and not s.held and not s.pins and not s.grads


def test_a_mark_variables_gradient_counts_while_the_variable_holds_it():
    s = Session("mv")
    ok(s, ones(1, 1000), ones(2, 1000), {"op": "mark_variables", "in": [1, 2]})
    assert s.nbytes == 2 * 1000 * F4
    ok(s, free(2))
    assert s.nbytes == 2 * 1000 * F4  # x's gradient buffer is that array
    ok(s, free(1))
    assert s.nbytes == 0


def test_a_function_recorded_on_a_gradient_handle_leaves_nothing_counted():
    s = Session("fn")
    for k in range(3):
        x, g = 10 * k + 1, 10 * k + 2
        fn = {
            "outputs": [g],
            "program": [{"op": "mul_scalar", "in": [900], "out": [901], "at": {"scalar": 1.0}}],
            "cotangents": [900],
            "gradients": [901],
        }
        ok(
            s,
            ones(x, 1000),
            {"op": "attach_grad", "in": [x]},
            {"op": "grad", "in": [x], "out": [g]},
            {"op": "record_function", "in": [x], "at": fn},
            free(x, g),
        )
    ok(s)
    assert s.nbytes == 0 and not s.held and not s.pins


def test_an_upload_in_a_request_buffer_counts_the_buffer():
    """An array read straight from a request's buffer keeps all of it alive."""
    s = Session("up")
    body = bytearray(1000)
    a = np.frombuffer(memoryview(body)[0:400], dtype=np.float32)
    b = np.frombuffer(memoryview(body)[400:1000], dtype=np.float32)
    ok(s, {"op": "array", "out": [1], "at": {"value": a}}, {"op": "array", "out": [2], "at": {"value": b}})
    del a, b  # (the session's now, as a server's are)
    assert s.nbytes == 1000
    ok(s, free(2))
    assert s.nbytes == 1000
    ok(s, free(1))
    assert s.nbytes == 0


def test_a_view_is_checked_by_what_it_adds():
    s = Session("late", limits=Limits(max_session_bytes=2_500_000))
    ok(s, ones(1, 500_000))  # 2 MB
    ok(s, {"op": "reshape", "in": [1], "out": [2], "at": {"shape": [1000, 500]}})
    ok(s, {"op": "getitem", "in": [1], "out": [3], "at": {"key": [[0, None, None]]}})
    assert s.nbytes == 2_000_000
    reply = run(s, {"op": "getitem", "in": [1], "out": [4], "at": {"key": [[0, None, 2]]}})  # a copy
    assert reply["error"]["kind"] == "QuotaExceeded" and 4 not in s.arrays and s.nbytes == 2_000_000


def test_a_backward_batch_leaves_the_count_right_at_its_end():
    s = Session("stale")
    ok(s, ones(1, 1000), {"op": "attach_grad", "in": [1]})
    ok(s, {"op": "exp", "in": [1], "out": [2], "mode": 3}, {"op": "sum", "in": [2], "out": [3], "mode": 3}, free(2))
    assert s.nbytes == 3 * 1000 * F4 + F4
    ok(s, {"op": "backward", "in": [3], "mode": 2})
    assert s.nbytes == 2 * 1000 * F4 + F4  # without waiting for another batch


def test_a_slice_leaves_a_large_command_to_the_thread_and_its_cap_is_restored():
    import time

    from gradserve.engine.session import BatchRun
    from gradserve.engine.slices import SLICE_ARRAY_BYTES

    s = Session("cmd")
    ok(s, ones(1, 2 * SLICE_ARRAY_BYTES // 4 + 1))  # (a command: twice the bound)
    job = s.begin({"ops": [ones(2, 4), {"op": "attach_grad", "in": [1]}]})
    assert isinstance(job, BatchRun)
    assert not job.run(deadline=time.perf_counter() + 60) and job.next == 1
    assert s._cap == s.limits.max_array_bytes
    assert job.run() and "error" not in job.finish() and s.node(1) is not None


def test_a_retry_lending_large_arrays_is_copied_off_the_event_loop():
    from gradserve.engine.slices import SLICE_ARRAY_BYTES

    s = Session("retry")
    msg = {"seq": 1, "ops": [ones(1, SLICE_ARRAY_BYTES // 4 + 1), {"op": "read", "in": [1]}]}
    s.run_batch(msg, copy_reads=False)
    assert s.begin(msg, copy_reads=False, blocking=False) is None  # (the caller goes to a thread)
    again = s.begin(msg, copy_reads=False)
    assert isinstance(again, dict) and not np.shares_memory(again["values"][0], s.get(1))


def test_a_freed_view_frees_its_base_in_the_same_sweep():
    s = Session("cascade", limits=Limits(max_session_bytes=100_000))
    ok(
        s,
        ones(1, 1),
        {"op": "attach_grad", "in": [1]},
        ones(2, 10_000),  # x: 40 KB
        {"op": "getitem", "in": [2], "out": [3], "at": {"key": [[0, 10, None]]}},  # v: a view of x
        {"op": "mul", "in": [3, 1], "out": [4], "mode": 1},  # the graph holds v, v holds x
        free(2, 3),
    )
    # the backward frees the graph, then v, then x: 60 KB more fits in the same batch
    ok(s, {"op": "backward", "in": [4]}, free(4), ones(5, 15_000))
    assert s.nbytes == held_memory(s) == 60_000 + 2 * F4


def test_a_function_returning_its_input_leaves_no_gradient_buffer_counted():
    """(The Python client refuses such a Function, as MXNet does; a REST client may send it.)"""
    s = Session("identity")
    for _ in range(3):
        function = {
            "op": "record_function",
            "in": [1],
            "at": {"outputs": [1], "program": [], "cotangents": [3], "gradients": [3]},
        }
        ok(s, ones(1, 1000 * 250), {"op": "attach_grad", "in": [1]}, function)
        ok(s, free(1))
        assert s.nbytes == 0 and not s.grads and not s.arrays


def test_a_corrupt_snapshot_is_refused_with_a_reason(tmp_path):
    import json

    from gradserve.engine import snapshot
    from gradserve.engine.errors import InvalidInput

    s = Session("c")
    ok(s, ones(1, 8), {"op": "reshape", "in": [1], "out": [2], "at": {"shape": [2, 4]}})
    snapshot.save(s, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        data = {k: z[k] for k in z.keys()}
    meta = json.loads(data["__meta__"].tobytes())
    for edit in (
        lambda m: m["views"][0].update(dtype="|O"),  # an object view over raw bytes
        lambda m: m["views"][0].update(offset=10**9),
        lambda m: m["views"][0].update(memory="a:99"),
        lambda m: m.pop("variables"),
        lambda m: m.update(aliases={"5": 77}),
    ):
        m = json.loads(json.dumps(meta))
        edit(m)
        np.savez(tmp_path / "bad.npz", **{**data, "__meta__": np.frombuffer(json.dumps(m).encode(), np.uint8)})
        with pytest.raises(InvalidInput):
            snapshot.load(tmp_path / "bad.npz")


def test_json_integers_are_exact_or_refused():
    from gradserve.engine import wire
    from gradserve.engine.errors import InvalidInput

    def decode(data, dtype):
        return wire.decode_tensor({"dtype": dtype, "shape": [len(data)], "data": data})

    assert decode([2**63 - 1, 0.5], "int64").tolist() == [2**63 - 1, 0]
    assert decode([2**62 + 1, 1.5], "int64").tolist() == [2**62 + 1, 1]
    bad = (([-1, 2**63], "int64"), ([float("nan")], "int32"), ([float("nan")], "bool"), ([2**64], "int64"))
    for data, dtype in bad:
        with pytest.raises(InvalidInput):
            decode(data, dtype)


def test_sum_to_its_own_shape_is_a_copy():
    s = Session("st")
    ok(s, ones(1, 4), {"op": "sum_to", "in": [1], "out": [2], "at": {"shape": [4]}})
    assert not np.shares_memory(s.get(1), s.get(2))


def test_a_training_steps_update_runs_in_the_slice(monkeypatch):
    """A weight update of a few MB stays on the event loop once timed: sending it to a thread
    costs a remote step about a tenth (it did at a bound of 1 MiB)."""
    import time

    monkeypatch.setattr(slices, "RATES", {})
    s = Session("step")
    ok(s, ones(1, 784 * 256), ones(2, 784 * 256))
    step = {"ops": [{"op": "update", "in": [1, 2], "at": {"fn": "sub"}}, {"op": "read", "in": [1]}]}
    ok(s, step["ops"][0])  # (its first run times it)
    for k, (_, size) in list(slices.RATES.items()):  # as a machine that was not stalled measured it
        slices.RATES[k] = (0.01, size)
    job = s.begin(step)
    assert job.run(deadline=time.perf_counter() + 60)
    assert "error" not in job.finish()


def test_a_recorded_backward_pass_counts_what_its_graph_holds():
    """autograd.grad(create_graph=True) keeps the pass's intermediates for a second
    derivative: they count, and a pass that holds more than there is room for is refused."""
    s = Session("cg", limits=Limits(max_session_bytes=50_000_000))
    n = 250_000  # 1 MB arrays

    def chain(base: int, depth: int) -> list[dict]:
        ops, prev = [], 1
        for k in range(depth):
            ops.append({"op": "tanh", "in": [prev], "out": [base + k], "mode": 1})
            prev = base + k
        at = {"variables": [1], "create_graph": True}
        ops.append({"op": "grad_of", "in": [prev], "out": [base + 999], "at": at, "mode": 1})
        ops.append(free(*range(base, base + depth)))
        return ops

    ok(s, ones(1, n), {"op": "attach_grad", "in": [1]})
    ok(s, *chain(1000, 5))
    gc.collect()
    ok(s)
    assert s.nbytes == held_memory(s) + sum(
        x.nbytes for x in _graph_arrays(s.nodes[1999]) if not any(x is a for a in s.arrays.values())
    )
    reply = run(s, *chain(2000, 20))
    assert reply["error"]["kind"] == "QuotaExceeded" and 2999 not in s.arrays
    gc.collect()
    ok(s, free(1999, *range(2000, 2020)))  # (the refused batch stopped before its free)
    gc.collect()
    ok(s)
    assert s.nbytes == 2 * n * F4  # x and its gradient buffer: the graphs are gone


def _graph_arrays(head) -> list:
    from gradserve.engine import tape

    seen: dict[int, np.ndarray] = {}
    for node in tape.toposort([head]):
        for x in (node.y, *(node.xs or ())):
            if isinstance(x, np.ndarray):
                seen[id(x)] = x
    return list(seen.values())


def test_a_recorded_dropout_counts_the_mask_its_node_keeps():
    """A Dropout recorded in training keeps its mask (an array as large as its output) for the
    backward pass: the mask counts while the graph holds it, and one that has no room is refused
    before it runs, the session as it was."""
    n = 250_000  # 1 MB arrays
    s = Session("dm", limits=Limits(max_session_bytes=int(7 * n * F4)))  # (a draw's float64 working array: 2.25 MB)
    ok(s, ones(1, n), {"op": "attach_grad", "in": [1]})  # 2 MB: x and its gradient buffer
    drop = {"op": "Dropout", "in": [1], "out": [2], "at": {"p": 0.5}, "mode": 3}
    ok(s, drop)
    mask = s.nodes[2].at["_kept"]
    assert mask.nbytes == n * F4 and s.nbytes == held_memory(s) + mask.nbytes  # 4 MB
    before = (s.nbytes, set(s.arrays), set(s.nodes))
    reply = run(s, {**drop, "out": [3]})  # 2 MB more, and the draws: over 7
    assert reply["error"]["kind"] == "QuotaExceeded"
    assert (s.nbytes, set(s.arrays), set(s.nodes)) == before
    ok(s, free(2))
    del mask
    gc.collect()
    ok(s)
    assert s.nbytes == held_memory(s) == 2 * n * F4  # the graph and its mask are gone
    ok(s, {**drop, "out": [3], "mode": 2})  # not recorded: no mask kept
    ok(s, {**drop, "in": [3], "out": [4], "mode": 3})  # recorded, but 3 is not in the graph: no mask kept
    gc.collect()
    ok(s)
    assert s.nbytes == held_memory(s) == 4 * n * F4
    ok(s, free(3, 4))
    # mode "always" draws a mask in prediction too (it went uncounted: the check read training)
    always = {**drop, "out": [5], "at": {"p": 0.5, "mode": "always"}, "mode": 1}
    ok(s, always)
    assert s.nodes[5].at["_kept"] is not None
    assert s.nbytes == held_memory(s) + n * F4 == 4 * n * F4


def test_a_programs_recorded_dropout_counts_its_mask_on_the_plan_path_too():
    """A program's calls after the first run from its plan: each recorded call's mask counts
    as the checked call's did, and the plan's check before a call includes it."""
    n = 250_000
    s = Session("dp", seed=3, limits=Limits(max_session_bytes=int(10.5 * n * F4)))  # (a draw: 2.25 MB more)
    prog = [{"op": "Dropout", "in": [-1], "out": [-2], "at": {"p": 0.5}, "mode": 3}]
    define = {"op": "define", "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": prog}}
    ok(s, ones(1, n), {"op": "attach_grad", "in": [1]}, define)  # 2 MB

    def call(h: int) -> dict:
        return {"op": "call", "in": [1], "out": [h], "at": {"id": 1}, "mode": 3}

    ok(s, call(2))  # checked, step by step: 2 MB
    assert s.programs[1].made == 2 * n * F4 and s.programs[1].plan is not None  # the output and its mask
    ok(s, call(3), call(4))  # from the plan: the same signature, and room for what it makes
    masks = [s.nodes[h].at["_kept"] for h in (2, 3, 4)]
    assert len({id(m) for m in masks}) == 3
    assert s.nbytes == held_memory(s) + 3 * n * F4  # 8 MB
    before = (s.nbytes, set(s.arrays), set(s.nodes))
    assert run(s, call(5))["error"]["kind"] == "QuotaExceeded"
    assert (s.nbytes, set(s.arrays), set(s.nodes)) == before
    ok(s, free(2, 3, 4))
    del masks
    gc.collect()
    ok(s)
    assert s.nbytes == held_memory(s) == 2 * n * F4


def test_the_copies_a_stored_reply_keeps_count_until_the_next_batch():
    """A batch's reads are copies the session keeps for a retry of the batch: they count
    until the next batch of the sequence, and a batch whose copies alone would pass the
    session's limit is refused (two hundred reads of a 4 MB array held 800 MB against a count
    of 4); an array read twice by one instruction is copied once."""
    n = 250_000  # 1 MB
    s = Session("r", limits=Limits(max_session_bytes=int(5.5 * n * F4)))
    s.run_batch({"seq": 1, "ops": [ones(1, n)]})
    reply = s.run_batch({"seq": 2, "ops": [{"op": "read", "in": [1, 1, 1]}]})  # one copy
    assert "error" not in reply and len({id(v) for v in reply["values"]}) == 1
    assert s.nbytes == 2 * n * F4 == held_memory(s) + s.reply_bytes
    reply = s.run_batch({"seq": 3, "ops": [{"op": "read", "in": [1]} for _ in range(200)]})
    assert reply["error"]["kind"] == "QuotaExceeded" and reply["error"]["index"] == 5  # 5 copies: 5 MB of 5.5
    assert len(reply["values"]) == 5 and s.nbytes == 6 * n * F4  # (the reply kept: a retry gets it)
    assert s.run_batch({"seq": 3, "ops": []}) is reply
    s.run_batch({"seq": 4, "ops": []})
    assert s.nbytes == n * F4 == held_memory(s)  # the next batch let the copies go
    s.run_batch({"ops": [{"op": "read", "in": [1]}]})  # outside the sequence: not kept
    assert s.nbytes == n * F4


def test_a_snapshot_writes_an_array_its_reply_read_twice_once_and_counts_the_reply(tmp_path):
    from gradserve.engine import snapshot

    n = 250_000
    s = Session("rs")
    s.run_batch({"seq": 1, "ops": [ones(1, n), {"op": "read", "in": [1, 1]}, {"op": "read", "in": [1]}]})
    snapshot.save(s, tmp_path / "rs.npz")
    with np.load(tmp_path / "rs.npz") as data:
        assert sorted(k for k in data.files if k.startswith("r:")) == ["r:0", "r:2"]
    t = snapshot.load(tmp_path / "rs.npz")
    values = t.last_reply["values"]
    assert values[0] is values[1] and values[2] is not values[0]
    assert [v.tolist()[:2] for v in values] == [[1.0, 1.0]] * 3
    assert t.nbytes == s.nbytes == 3 * n * F4 and t.reply_bytes == 2 * n * F4


def test_convolution_and_pooling_count_their_working_arrays():
    """Pooling and Convolution make their windows (a kernel's worth per output) while they
    run: refused past the per-array limit or the session's room, before anything is made
    (a 48 x 48 max pool of a 1 MB image held 2 GB under a 16 MiB quota)."""
    s = Session("w", limits=Limits(max_session_bytes=16 << 20, max_array_bytes=8 << 20))
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1, 1, 512, 512]}})  # 1 MiB
    before = (s.nbytes, set(s.arrays))
    pool = {"op": "Pooling", "in": [1], "out": [2], "at": {"kernel": [48, 48]}}
    err = run(s, pool)["error"]
    assert err["kind"] == "QuotaExceeded" and "working array of" in err["message"]
    assert (s.nbytes, set(s.arrays)) == before
    small = {**pool, "at": {"kernel": [2, 2], "stride": [2, 2]}}  # windows: 1 MiB
    ok(s, small)
    s.limits.max_session_bytes = s.nbytes + (1 << 20)  # room for the output, not for its windows too
    err = run(s, {**small, "out": [3]})["error"]
    assert err["kind"] == "QuotaExceeded" and "while it runs" in err["message"] and 3 not in s.arrays


def test_an_op_that_would_hold_the_event_loop_long_is_left_for_the_thread(monkeypatch):
    """In a slice of a server's event loop, an op of many multiply-adds (a small result may
    still take a second) or large working arrays is not started: the thread runs it and the
    rest. Small ones run in the slice."""
    import time

    s = Session("slow")
    # windows of 6.8 MB (under the slice's 8 MiB), 110 M multiply-adds
    ok(s, ones(1, 120 * 120), {"op": "reshape", "in": [1], "out": [2], "at": {"shape": [1, 1, 120, 120]}})
    ok(s, {"op": "ones", "out": [3], "at": {"shape": [64, 1, 12, 12]}})
    conv = {
        "op": "Convolution",
        "in": [2, 3],
        "out": [4],
        "at": {"kernel": [12, 12], "num_filter": 64, "no_bias": True},
    }
    dot = {"op": "dot", "in": [5, 5], "out": [6]}
    ok(s, {"op": "ones", "out": [5], "at": {"shape": [64, 64]}})
    ok(s, {**dot, "out": [7]}, free(7))  # (timed: an op of this size not timed yet is the thread's)

    monkeypatch.setattr(slices, "RATES", dict(slices.RATES))  # (this test's own)
    for k, (_, size) in list(slices.RATES.items()):  # (as a machine that was not stalled measured it)
        if k[0] == "dot":
            slices.RATES[k] = (0.01, size)
    for ins, in_slice in ((dot, True), (conv, False)):
        job = s.begin({"ops": [ins]})
        assert job.run(deadline=time.perf_counter() + 60) is in_slice, ins["op"]
        if not in_slice:
            assert job.next == 0 and ins["out"][0] not in s.arrays  # not started
            assert job.run()  # the thread's turn
        assert "error" not in job.finish()


def in_slice(s: Session, *ops: dict) -> bool:
    """Run a batch as a server's event loop starts one (a slice): whether it ran whole there;
    if not, the thread's turn runs the rest, which must not fail."""
    import time

    job = s.begin({"ops": list(ops)})
    whole = job.run(deadline=time.perf_counter() + 60)
    if not whole:
        assert job.run()  # the thread's turn: what was left, from where the slice stopped
    assert "error" not in job.finish()
    return whole


def test_an_update_by_a_scaled_array_makes_no_product_in_a_slice(monkeypatch):
    """``update`` with ``scale`` where the one-pass kernel cannot run (float16) makes the
    product first: in a slice of the event loop that would run before the update is judged, so
    a large one is left for the thread, as the ``mul_scalar`` it stands for would be (an
    update known to be quick runs there)."""
    s = Session("scaled")
    n = 1 << 16  # 128 KiB of float16
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [n], "dtype": "float16"}})
    ok(s, {"op": "ones", "out": [2], "at": {"shape": [n], "dtype": "float16"}})
    f16 = np.dtype("float16").num
    monkeypatch.setattr(slices, "RATES", {("update", "sub", f16): (0.01, 4 * n)})  # quick, as timed
    assert in_slice(s, {"op": "update", "in": [1, 2], "at": {"fn": "sub"}})
    scaled = {"op": "update", "in": [1, 2], "at": {"fn": "sub", "scale": 0.25}}
    assert not in_slice(s, scaled)
    small = {"op": "update", "in": [3, 4], "at": {"fn": "sub", "scale": 0.25}}
    f16 = {"shape": [100], "dtype": "float16"}
    made = [{"op": "ones", "out": [h], "at": f16} for h in (3, 4)]
    assert in_slice(s, *made, small)  # (a small product costs nothing: it runs there)
    assert s.get(1)[0] == -0.25 and s.get(3)[0] == 0.75


def test_an_elementwise_op_is_left_for_the_thread_by_its_time_not_its_size(monkeypatch):
    """A float16 polygamma of 8 MiB takes seconds with a result under the slice's bound:
    an op's time per byte, measured as it runs (in the thread the first time), says whether
    it may run in the slice; an elementwise op that is quick runs there once it is timed."""

    monkeypatch.setattr(slices, "RATES", {})  # (as a server that just started)
    s = Session("slow-elementwise")
    n = 1 << 16  # 128 KiB of float16
    ok(s, {"op": "random_uniform", "out": [1], "at": {"shape": [n], "low": 0.1, "high": 0.9, "dtype": "float16"}})
    slow = {"op": "polygamma", "in": [1], "out": [2], "at": {"n": 3}}
    quick = {"op": "relu", "in": [1], "out": [3]}
    assert not in_slice(s, quick)  # not timed yet: left for the thread, which times it
    ok(s, free(3))
    (key,) = [k for k in slices.RATES if k[0] == "relu"]
    assert slices.RATES[key][1] == 4 * n  # timed on its 128 KiB in and 128 KiB out
    # (a clock read on a loaded machine may take a stall into a quick op's time: the decision
    # is checked on the rate of a machine where 128 KiB of relu takes microseconds)
    slices.RATES[key] = (0.1, 4 * n)
    assert in_slice(s, quick)
    ok(s, free(3))
    slices.RATES[key] = (100.0, 4 * n)  # 26 ms: as a stalled machine measured it
    assert not in_slice(s, quick)
    assert not in_slice(s, slow)  # timed in the thread
    ok(s, free(2))
    assert not in_slice(s, slow)  # tens of milliseconds: again the thread's
    (rate,) = [r for k, r in slices.RATES.items() if k[:2] == ("polygamma", np.dtype("float16").num)]
    # the rate it keeps leaves the docstring's 8 MiB (in and out) to the thread: far past a slice
    # (on 128 KiB it is about one slice, 4.9 ms in a CI run: too near the bound to assert)
    assert rate[0] * 2 * (8 << 20) > 10 * slices.SLICE_NS
    tiny = {"op": "polygamma", "in": [4], "out": [5], "at": {"n": 3}}
    assert in_slice(s, ones(4, 100), tiny)  # under TIMED_BYTES: not judged, not timed


def test_a_session_in_the_users_process_times_no_ops(monkeypatch):
    """Rates are for the slices of a server's event loop: a server's session times its costly
    ops and updates, an in-process one (which runs no slices) spends no clock reads on them."""
    monkeypatch.setattr(slices, "RATES", {})
    client = gradserve.Client(gradserve.InProcess())
    try:
        gradserve.set_current(client)
        x = nd.ones((1 << 16,))
        y = nd.relu(x) + 1
        y -= 0.5 * x
        assert y.asnumpy()[0] == 1.5
        assert slices.RATES == {}
    finally:
        gradserve.set_current(None)
        client.close()
    s = Session("served")
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1 << 16]}})
    ok(s, {"op": "relu", "in": [1], "out": [2]})
    ok(s, {"op": "update", "in": [2, 1], "at": {"fn": "sub", "scale": 0.5}})
    assert {k[:2] for k in slices.RATES} >= {("relu", np.dtype("float32").num), ("update", "scaled")}


def test_a_backward_pass_is_left_for_the_thread_by_its_graphs_expected_time(monkeypatch):
    """A backward pass in a slice is judged by its graph: about twice its ops' forward times
    as measured (a training step's runs in the slice, its products timed per multiply-add; a
    graph of slow elementwise ops, or of many nodes, goes to the thread before anything of it
    is computed, and a session's graph of many nodes before it is walked)."""
    import time

    monkeypatch.setattr(slices, "RATES", {})
    s = Session("slow-backward")
    ok(s, ones(1, 128 * 64), {"op": "attach_grad", "in": [1]}, {"op": "ones", "out": [2], "at": {"shape": [64, 64]}})
    ok(s, {"op": "reshape", "in": [1], "out": [3], "at": {"shape": [128, 64]}, "mode": 3})
    step = [
        {"op": "dot", "in": [3, 2], "out": [4], "mode": 3},
        {"op": "relu", "in": [4], "out": [5], "mode": 3},
        {"op": "sum", "in": [5], "out": [6], "mode": 3},
    ]
    ok(s, *step)  # (timed: in-process batches run whole, and time their large ops too)
    assert {k[0] for k in slices.RATES} >= {"reshape", "dot", "relu", "sum"}
    for k, (_, size) in list(slices.RATES.items()):  # as a quick machine, not stalled, measured them
        slices.RATES[k] = (0.01, size)
    assert in_slice(s, {"op": "backward", "in": [6], "mode": 2})
    assert s.nodes[1].grad.any()
    ok(s, free(4, 5, 6), {"op": "polygamma", "in": [1], "out": [7], "at": {"n": 1}, "mode": 3})
    ok(s, {"op": "sum", "in": [7], "out": [8], "mode": 3}, free(7))
    node = s.nodes[8].parents[0]  # polygamma's
    key = slices.op_key("polygamma", node.xs[0], node.at)
    slices.RATES[key] = (1e4, 1 << 40)  # as a slow machine measured it
    s.nodes[1].grad[:] = 0
    assert not in_slice(s, {"op": "backward", "in": [8], "mode": 2})
    assert s.nodes[1].grad.any()  # the thread ran it
    chain = [
        {"op": "add_scalar", "in": [100 + k], "out": [101 + k], "at": {"scalar": 1.0}, "mode": 1} for k in range(3000)
    ]
    ok(s, ones(100, 1), {"op": "attach_grad", "in": [100]}, *chain)
    job = s.begin({"ops": [{"op": "backward", "in": [3100], "mode": 2}]})
    assert not job.run(deadline=time.perf_counter() + 60) and job.next == 0  # 3,000 nodes' bookkeeping
    s._in_slice = True  # (the slice's own check, before the graph is walked)
    with pytest.raises(slices.SliceEnds):
        backprop.large_graph(s)
    s._in_slice = False
    assert job.run() and "error" not in job.finish()  # the thread's


def test_the_rates_a_slice_goes_by(monkeypatch):
    """An op's key leaves out what its forward wrote into its attributes (BatchNorm's _train:
    its backward went to the thread every step); a run much smaller than the rate's leaves it
    (its time is mostly the op's fixed cost) unless it took long enough to be the op's own (a
    value that costs more, fmod of 1e300 by 1e-300); an op's size counts every input (add_n)."""
    from gradserve.engine.slices import op_key, record_rate

    rates: dict = {}
    monkeypatch.setattr(slices, "RATES", rates)
    x = np.ones(4, np.float32)
    assert op_key("BatchNorm", x, {"axis": 1, "_train": True}) == op_key("BatchNorm", x, {"axis": 1})
    assert op_key("mul_scalar", x, {"scalar": 0.25}) == op_key("mul_scalar", x, {"scalar": 0.5})
    assert op_key("LeakyReLU", x, {"act_type": "gelu"}) != op_key("LeakyReLU", x, {"act_type": "leaky"})
    record_rate(("k",), 1 << 20, 1e5)  # 0.095 ns a byte on 1 MiB
    record_rate(("k",), 1 << 10, 1e4)  # a small run, mostly fixed cost: left
    assert rates[("k",)] == (1e5 / (1 << 20), 1 << 20)
    record_rate(("k",), 1 << 16, 2e6)  # a small run of 2 ms: the op's own time
    assert rates[("k",)] == (2e6 / (1 << 16), 1 << 20)
    record_rate(("k",), 1 << 20, 1e4)  # a quick run of the same size halves it at most
    assert rates[("k",)][0] == 2e6 / (1 << 16) / 2
    monkeypatch.setattr(slices, "MAX_RATES", 3)  # (keys made of any user's strings)
    for name in "abc":
        record_rate((name,), 1 << 20, 1e5)
    assert list(rates) == [("a",), ("b",), ("c",)]  # the oldest went
    record_rate(("a",), 1 << 20, 1e5)
    record_rate(("d",), 1 << 20, 1e5)
    assert list(rates) == [("b",), ("c",), ("d",)]
    s = Session("add_n")
    ok(s, ones(1, 1024))  # 4 KiB
    many = {"op": "add_n", "in": [1] * 2000, "out": [2]}  # 8 MB of inputs
    rates[op_key("add_n", s.get(1), {})] = (1.0, 1 << 24)  # 1 ns a byte
    assert not in_slice(s, many)  # 8 ms by all its inputs (its largest alone: 4 us)


def test_a_functions_backward_program_is_let_go_with_its_graph_and_a_long_one_is_the_threads():
    s = Session("function-backward")
    ok(s, ones(1, 100), {"op": "attach_grad", "in": [1]}, ones(4, 100))
    step = {"op": "mul_scalar", "in": [90], "out": [91], "at": {"scalar": 2.0}}
    function = {
        "op": "record_function",
        "in": [1],
        "at": {"outputs": [4], "cotangents": [90], "gradients": [91], "program": [step] * 100},
    }
    ok(s, function, {"op": "sum", "in": [4], "out": [5], "mode": 1})
    vjp = s.nodes[4].op
    assert len(vjp.program) == 100 and s.graph_bytes > 2 * NODE_BYTES
    ok(s, {"op": "backward", "in": [5], "mode": 2})
    assert vjp.program == [] and s.graph_bytes == live_nodes(s) * NODE_BYTES == 0
    assert s.nodes[1].grad.tolist() == [2.0] * 100
    long = {**function, "at": {**function["at"], "outputs": [6], "program": [step] * 1000}}
    ok(s, ones(6, 100))
    assert not in_slice(s, long)  # (checked step by step: the thread's, as a long define)


def test_an_op_the_machine_has_no_memory_for_is_refused_not_a_fault():
    s = Session("oom", limits=Limits(max_session_bytes=1 << 60, max_array_bytes=1 << 60, max_user_bytes=1 << 60))
    err = run(s, {"op": "ones", "out": [1], "at": {"shape": [1 << 43]}})["error"]  # 32 TiB
    assert err["kind"] == "QuotaExceeded" and "memory" in err["message"] and 1 not in s.arrays


def test_a_session_holds_at_most_its_limit_of_arrays():
    """An empty array counts no bytes but costs the server memory and its snapshots time (a
    million of them: 240 MB and 26 s under a 1 MiB quota): a session holds at most
    ``max_session_arrays`` handles."""
    s = Session("n", limits=Limits(max_session_arrays=3))
    ok(s, *({"op": "zeros", "out": [h], "at": {"shape": [0]}} for h in (1, 2, 3)))
    err = run(s, {"op": "zeros", "out": [4], "at": {"shape": [0]}})["error"]
    assert err["kind"] == "QuotaExceeded" and "limit of 3" in err["message"] and set(s.arrays) == {1, 2, 3}
    err = run(s, {"op": "ones", "out": [5], "at": {"shape": [2]}}, {"op": "read", "in": [1, 2]})["error"]
    assert err["index"] == 0
    ok(s, free(1), {"op": "zeros", "out": [4], "at": {"shape": [0]}})
    assert set(s.arrays) == {2, 3, 4}
    # a gradient buffer's second name (grad) and a program's outputs are handles too
    ok(s, free(3, 4), {"op": "attach_grad", "in": [2]}, {"op": "grad", "in": [2], "out": [5]})
    err = run(s, {"op": "grad", "in": [2], "out": [6]}, {"op": "grad", "in": [2], "out": [7]})["error"]
    assert err["kind"] == "QuotaExceeded" and err["index"] == 1 and set(s.arrays) == {2, 5, 6}
    ok(s, free(6))
    step = {"op": "add_scalar", "in": [-1], "out": [-2], "at": {"scalar": 1.0}}
    ok(s, {"op": "define", "at": {"id": 1, "nargs": 1, "program": [step], "outputs": [-2, -1]}})
    err = run(s, {"op": "call", "in": [2], "out": [8, 9], "at": {"id": 1}})["error"]
    assert err["kind"] == "QuotaExceeded" and "limit of 3" in err["message"] and set(s.arrays) == {2, 5}
    ok(s, free(5), {"op": "call", "in": [2], "out": [8, 9], "at": {"id": 1}})
    assert set(s.arrays) == {2, 8, 9}


def test_reads_in_a_session_past_half_its_quota_still_work_and_copies_count_once():
    """A read's copies need no room beside the arrays (a session over half full read nothing
    in-process); a lent reply copied for a retry counts only the values that were lent."""
    client = gradserve.Client(gradserve.InProcess(limits=Limits(max_session_bytes=1 << 20)))
    gradserve.set_current(client)
    try:
        x = nd.ones((160_000,))  # 640 KB of 1 MiB
        assert x.asnumpy().sum() == 160_000
        assert client.transport.info() == {
            "id": "local",
            "owner": "anonymous",
            "arrays": 1,
            "bytes": 640_000,
            "reply_bytes": 0,
            "graph_bytes": 0,
            "program_bytes": 0,
        }
    finally:
        gradserve.set_current(None)
    import time

    n = 1000
    s = Session("c")
    s.run_batch({"seq": 1, "ops": [ones(1, n), ones(2, n)]})
    job = s.begin(
        {
            "seq": 2,
            "ops": [{"op": "read", "in": [1]}, {"op": "add", "in": [1, 2], "out": [3]}, {"op": "read", "in": [2]}],
        },
        copy_reads=False,
    )
    assert job.run(deadline=time.perf_counter() + 60)
    job.finish()  # the first read a copy, the last the array itself
    assert s.reply_bytes == n * F4
    s.run_batch({"seq": 2, "ops": []})  # a retry: the lent value copied, the copy kept as it is
    assert s.reply_bytes == 2 * n * F4 and s.nbytes == 3 * n * F4 + s.reply_bytes


def test_a_backward_pass_whose_working_arrays_pass_the_quota_is_refused_before_it_starts():
    """A Pooling's or Convolution's VJP makes windows again (max pooling's: two window-sized
    arrays at once): a pass whose working arrays would pass the session's room is refused
    before anything is computed, its graph and gradients as they were (it ran unchecked)."""
    s = Session("b", limits=Limits(max_session_bytes=64 << 20))
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1, 1, 512, 512]}}, {"op": "attach_grad", "in": [1]})  # 2 MiB
    pool = {"op": "Pooling", "in": [1], "out": [2], "at": {"kernel": [2, 2], "stride": [2, 2]}, "mode": 3}
    ok(s, pool, {"op": "sum", "in": [2], "out": [3], "mode": 3})  # its windows: 1 MiB
    s.limits.max_session_bytes = s.held_bytes() + (1 << 20)  # room for the windows once, not twice
    err = run(s, {"op": "backward", "in": [3], "at": {"retain_graph": True}, "mode": 2})["error"]
    assert err["kind"] == "QuotaExceeded" and "backward: its working arrays" in err["message"]
    assert s.nodes[3].live and not s.nodes[1].grad.any()  # nothing computed, the graph kept
    err = run(s, {"op": "grad_of", "in": [3], "out": [9], "at": {"variables": [1]}, "mode": 2})["error"]
    assert err["kind"] == "QuotaExceeded" and 9 not in s.arrays  # autograd.grad too
    s.limits.max_session_bytes = s.held_bytes() + (2 << 20)
    ok(s, {"op": "backward", "in": [3], "mode": 2})
    assert s.nodes[1].grad.sum() == 512 * 512 // 4  # one input of each window gets its output's gradient


def test_an_integer_pows_backward_counts_its_float64_working_arrays():
    """An integer pow's gradient is computed in float64 (MXNet's, truncated): 6 arrays of 8
    bytes an element for a uint8 graph held 19 x the graph, unchecked."""
    s = Session("i", limits=Limits(max_session_bytes=64 << 20))
    ok(
        s,
        {"op": "array", "out": [1], "at": {"value": np.full(1_000_000, 2, np.uint8)}},
        {"op": "array", "out": [2], "at": {"value": np.full(1_000_000, 3, np.uint8)}},
        {"op": "attach_grad", "in": [1]},
        {"op": "pow", "in": [1, 2], "out": [3], "mode": 3},
        {"op": "sum", "in": [3], "out": [4], "mode": 3},
    )
    s.limits.max_session_bytes = s.nbytes + (40 << 20)  # room for 5 float64 arrays of its size, not 6
    err = run(s, {"op": "backward", "in": [4], "at": {"retain_graph": True}, "mode": 2})["error"]
    assert err["kind"] == "QuotaExceeded" and "backward: its working arrays" in err["message"]
    assert not s.nodes[1].grad.any()
    s.limits.max_session_bytes = s.nbytes + (48 << 20)
    ok(s, {"op": "backward", "in": [4], "mode": 2})
    assert (s.nodes[1].grad == 12).all()  # 3 * 2 ** 2


def test_a_poolings_backward_is_held_to_the_room_not_to_the_per_array_limit():
    """The VJP's two window-sized arrays are checked against the session's room: each is no
    larger than the forward's windows, which the per-array limit let through (their sum was
    held to it: a forward that ran had every backward refused)."""
    s = Session("a", limits=Limits(max_session_bytes=256 << 20, max_array_bytes=12 << 20))
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1, 1, 512, 512]}}, {"op": "attach_grad", "in": [1]})
    pool = {"op": "Pooling", "in": [1], "out": [2], "at": {"kernel": [3, 3], "stride": [1, 1]}, "mode": 3}
    ok(s, pool, {"op": "sum", "in": [2], "out": [3], "mode": 3})  # windows: 9 MiB, under the 12 per array
    ok(s, {"op": "backward", "in": [3], "mode": 2})
    grad = s.nodes[1].grad
    assert grad.shape == (1, 1, 512, 512) and grad.sum() == 510 * 510  # each window's 1 to its maximum


def test_a_backward_pass_near_the_quota_without_windows_runs():
    """Only working arrays are checked, not the cotangents a pass makes (each the size of an
    array the graph holds): a dot's weight gradient near the quota is not refused."""
    s = Session("d", limits=Limits(max_session_bytes=64 << 20))
    ok(
        s,
        {"op": "ones", "out": [1], "at": {"shape": [256, 2048]}},
        {"op": "ones", "out": [2], "at": {"shape": [2048, 2048]}},  # 16 MiB, and its gradient buffer
        {"op": "attach_grad", "in": [2]},
        {"op": "dot", "in": [1, 2], "out": [3], "mode": 3},
        {"op": "sum", "in": [3], "out": [4], "mode": 3},
    )
    s.limits.max_session_bytes = s.nbytes + (10 << 20)
    ok(s, {"op": "backward", "in": [4], "mode": 2})
    assert (s.nodes[2].grad == 256).all()


def test_a_programs_convolution_is_checked_and_kept_off_the_event_loop_like_an_ops():
    """A program's first call (or one with other shapes) with a Convolution in it runs in the
    thread, not in a slice of the event loop (it ran there whole, however long); a call on the
    checked plan needs room for its steps' working arrays too (the plan skipped them)."""
    import time

    s = Session("p", limits=Limits(max_session_bytes=64 << 20))
    ok(s, {"op": "ones", "out": [1], "at": {"shape": [1, 1, 512, 512]}})  # 1 MiB
    prog = [{"op": "Pooling", "in": [-1], "out": [-2], "at": {"kernel": [2, 2], "stride": [2, 2]}}]
    ok(s, {"op": "define", "at": {"id": 1, "nargs": 1, "program": prog, "outputs": [-2]}})
    call = {"op": "call", "in": [1], "out": [2], "at": {"id": 1}}
    job = s.begin({"ops": [call]})
    assert not job.run(deadline=time.perf_counter() + 60)  # never run whole: left for the thread
    assert job.next == 0 and 2 not in s.arrays
    assert job.run() and "error" not in job.finish()
    job = s.begin({"ops": [{**call, "out": [3]}]})
    assert job.run(deadline=time.perf_counter() + 60)  # run whole in 1 ms: in the slice from now on
    assert "error" not in job.finish()
    ok(s, free(2, 3))
    # room for the output (256 KiB), not for the windows (1 MiB) as well
    s.limits.max_session_bytes = s.nbytes + (512 << 10)
    err = run(s, {**call, "out": [4]})["error"]
    assert err["kind"] == "QuotaExceeded" and "working array" in err["message"] and 4 not in s.arrays


def test_a_sort_counts_its_int64_order_forward_and_backward():
    """A sort makes an int64 order of its input's size (8 bytes an element of a float16
    array of 2) and its VJP more (measured 36 to 40 bytes an element): both are working arrays,
    checked as Pooling's are (they went uncounted)."""
    s = Session("s", limits=Limits(max_session_bytes=64 << 20))
    n = 1_000_000
    ok(
        s,
        {"op": "random_normal", "out": [1], "at": {"shape": [n], "dtype": "float16"}},
        {"op": "attach_grad", "in": [1]},
    )
    s.limits.max_session_bytes = s.nbytes + 8 * n  # room for the sorted copy, not its order as well
    err = run(s, {"op": "sort", "in": [1], "out": [2], "mode": 3})["error"]
    assert err["kind"] == "QuotaExceeded" and "working array" in err["message"] and 2 not in s.arrays
    s.limits.max_session_bytes = s.nbytes + 20 * n
    ok(s, {"op": "sort", "in": [1], "out": [2], "mode": 3}, {"op": "sum", "in": [2], "out": [3], "mode": 3})
    err = run(s, {"op": "backward", "in": [3], "at": {"retain_graph": True}, "mode": 2})["error"]
    assert err["kind"] == "QuotaExceeded" and "backward: its working arrays" in err["message"]
    s.limits.max_session_bytes = s.nbytes + 48 * n
    ok(s, {"op": "backward", "in": [3], "mode": 2})
    assert (s.nodes[1].grad == 1).all()


COSTLY = [  # op, attributes, input shapes and dtypes (the first a variable)
    ("Pooling", {"kernel": [3, 3], "stride": [1, 1], "pad": [1, 1]}, [((2, 8, 48, 48), "float32")]),
    ("Pooling", {"kernel": [4, 4], "stride": [2, 2], "pool_type": "avg"}, [((2, 8, 48, 48), "float32")]),
    ("Pooling", {"kernel": [3, 3], "pool_type": "sum"}, [((2, 8, 48, 48), "float64")]),
    ("Pooling", {"global_pool": True}, [((1, 2, 64, 64), "float16")]),
    ("Pooling", {"kernel": [3, 3], "stride": [2, 2], "pooling_convention": "full"}, [((2, 8, 48, 48), "float32")]),
    ("Pooling", {"kernel": [3, 3], "pool_type": "lp", "p_value": 2}, [((2, 8, 48, 48), "float32")]),
    ("LayerNorm", {}, [((256, 1024), "float16"), ((1024,), "float16"), ((1024,), "float16")]),
    ("LayerNorm", {"axis": 0}, [((256, 1024), "float32"), ((256,), "float32"), ((256,), "float32")]),
    ("InstanceNorm", {}, [((8, 16, 32, 32), "float16"), ((16,), "float16"), ((16,), "float16")]),
    ("InstanceNorm", {}, [((8, 16, 32, 32), "float64"), ((16,), "float64"), ((16,), "float64")]),
    ("Pooling", {"kernel": [2, 2], "stride": [2, 2], "pool_type": "lp", "p_value": 3}, [((2, 8, 48, 48), "float16")]),
    (
        "Pooling",
        {"kernel": [3, 3], "stride": [2, 2], "pool_type": "avg", "pooling_convention": "full"},
        [((2, 8, 48, 48), "float16")],
    ),
    (
        "Convolution",
        {"kernel": [3, 3], "num_filter": 8},
        [((2, 8, 40, 40), "float32"), ((8, 8, 3, 3), "float32"), ((8,), "float32")],
    ),
    (
        "Convolution",
        {"kernel": [5, 5], "num_filter": 4, "stride": [2, 2], "pad": [2, 2]},
        [((2, 3, 40, 40), "float32"), ((4, 3, 5, 5), "float32"), ((4,), "float32")],
    ),
    (
        "Convolution",
        {"kernel": [5], "num_filter": 8, "dilate": [2], "pad": [4]},  # 1-D
        [((4, 8, 600), "float32"), ((8, 8, 5), "float32"), ((8,), "float32")],
    ),
    ("Pooling", {"kernel": [3], "stride": [2], "pool_type": "avg"}, [((4, 8, 2000), "float32")]),  # 1-D
    (
        "Deconvolution",
        {"kernel": [3, 3], "num_filter": 4, "stride": [2, 2], "dilate": [2, 2], "pad": [1, 1]},
        [((2, 6, 20, 20), "float32"), ((6, 4, 3, 3), "float32")],
    ),
    (
        "Convolution",
        {"kernel": [3, 3], "num_filter": 8, "num_group": 4, "pad": [1, 1]},
        [((2, 8, 40, 40), "float32"), ((8, 2, 3, 3), "float32"), ((8,), "float32")],
    ),
    (
        "Deconvolution",
        {"kernel": [4, 4], "num_filter": 6, "stride": [2, 2], "pad": [1, 1], "no_bias": False},
        [((2, 8, 20, 20), "float32"), ((8, 6, 4, 4), "float32"), ((6,), "float32")],
    ),
    (
        "Deconvolution",
        {"kernel": [3, 3], "num_filter": 8, "num_group": 2, "stride": [2, 2], "target_shape": [40, 40]},
        [((2, 4, 20, 20), "float64"), ((4, 4, 3, 3), "float64")],
    ),
    (
        "Pooling",
        {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1], "pool_type": "avg", "count_include_pad": False},
        [((2, 8, 48, 48), "float32")],
    ),
    ("Pad", {"mode": "reflect", "pad_width": [0, 0, 0, 0, 3, 3, 3, 3, 2, 2]}, [((2, 4, 16, 16, 16), "float32")]),
    ("Pad", {"mode": "edge", "pad_width": [0, 0, 0, 0, 3, 3, 3, 3]}, [((4, 8, 48, 48), "float32")]),
    ("pad_grad", {"mode": "edge", "pad_width": [0, 0, 0, 0, 3, 3, 3, 3, 3, 3]}, [((2, 4, 16, 16, 16), "float32")]),
    ("sort", {}, [((300, 400), "float16")]),
    ("sort", {"axis": None}, [((300, 400), "float32")]),
    ("argsort", {"axis": 0}, [((300, 400), "float32")]),
    ("topk", {"k": 5, "ret_typ": "value"}, [((300, 400), "float32")]),
    ("topk", {"k": 5, "ret_typ": "mask", "axis": 0}, [((300, 400), "float64")]),
    ("pow", {}, [((200, 300), "int32"), ((200, 300), "int32")]),
    ("div", {}, [((200, 300), "uint8"), ((300,), "uint8")]),
    ("mod", {}, [((200, 300), "float32"), ((200, 300), "float32")]),
    ("mod_scalar", {"scalar": 1.5}, [((200, 300), "float32")]),
    ("rmod_scalar", {"scalar": 7.0}, [((200, 300), "float32")]),
    ("pow_scalar", {"scalar": 2.0}, [((200, 300), "int32")]),
    ("rpow_scalar", {"scalar": 2.0}, [((200, 300), "int32")]),
    ("div_scalar", {"scalar": 3.0}, [((200, 300), "int32")]),
    ("rdiv_scalar", {"scalar": 3.0}, [((200, 300), "int32")]),
    ("sample_normal", {"shape": [20]}, [((100, 100), "float32"), ((100, 100), "float32")]),
    ("sample_gamma", {"shape": [10]}, [((100, 100), "float64"), ((100, 100), "float64")]),
    ("sample_generalized_negative_binomial", {"shape": [10]}, [((100, 100), "float32"), ((100, 100), "float32")]),
    ("sample_multinomial", {"shape": [50]}, [((2000, 10), "float32")]),
    ("erf", {}, [((300, 400), "float32")]),  # (the special functions: in float64, a chunk at a time)
    ("erfinv", {}, [((300, 400), "float16")]),
    ("gamma", {}, [((300, 400), "float32")]),
    ("gammaln", {}, [((300, 400), "float32")]),
    ("polygamma", {"n": 5}, [((300, 400), "float32")]),
    ("polygamma", {"n": 16}, [((300, 400), "float16")]),
    ("LeakyReLU", {"act_type": "gelu"}, [((300, 400), "float32")]),
    ("norm", {}, [((300, 400), "float16")]),  # (its squares in float32)
    ("norm", {"axis": 1, "ord": 1}, [((300, 400), "float32")]),
    ("norm", {"axis": 0}, [((300, 400), "float64")]),
    (
        "linalg_gemm",
        {"alpha": 2.0},
        [((4, 200, 100), "float64"), ((4, 100, 150), "float64"), ((4, 200, 150), "float64")],
    ),
    ("linalg_gemm2", {"transpose_a": True}, [((4, 100, 200), "float32"), ((4, 100, 150), "float32")]),
    ("linalg_syrk", {"transpose": True}, [((4, 200, 150), "float64")]),
    ("linalg_trsm", {"rightside": True}, [((4, 200, 200), "float64"), ((4, 150, 200), "float64")]),
    ("linalg_trmm", {"lower": False}, [((4, 200, 200), "float64"), ((4, 200, 150), "float64")]),
    ("linalg_potrf", {}, [((4, 200, 200), "float64")]),
    ("linalg_potri", {}, [((4, 200, 200), "float64")]),
    ("linalg_inverse", {}, [((4, 200, 200), "float64")]),
    ("linalg_det", {}, [((4, 200, 200), "float64")]),
    ("linalg_slogdet", {}, [((4, 200, 200), "float32")]),
    ("linalg_gelqf", {}, [((4, 150, 200), "float32")]),
    ("linalg_gelqf", {}, [((2, 100, 100), "float64")]),
    ("linalg_syevd", {}, [((4, 150, 150), "float32")]),
    ("linalg_sumlogdiag", {}, [((4, 200, 200), "float64")]),
    ("linalg_extracttrian", {}, [((4, 200, 200), "float32")]),
    ("linalg_maketrian", {}, [((4, 20100), "float32")]),
    ("linalg_gemm2", {"alpha": 0.5, "transpose_b": True}, [((300, 200), "float64"), ((250, 200), "float64")]),
    (
        "linalg_gemm",
        {"beta": 0.5, "transpose_a": True, "transpose_b": True},
        [((4, 100, 200), "float32"), ((4, 150, 100), "float32"), ((4, 200, 150), "float32")],
    ),
    (
        "linalg_gemm",
        {"alpha": 0.0, "beta": 2.0},
        [((4, 200, 100), "float64"), ((4, 100, 150), "float64"), ((4, 200, 150), "float64")],
    ),
    ("linalg_syrk", {"alpha": 2.0}, [((4, 150, 200), "float32")]),
    (  # (numpy's linalg computes float32 in float64: its copies)
        "linalg_trsm",
        {"lower": False, "transpose": True, "alpha": 2.0},
        [((4, 200, 200), "float32"), ((4, 200, 150), "float32")],
    ),
    ("linalg_trsm", {"rightside": True}, [((100, 100), "float32"), ((600, 100), "float32")]),  # B larger than A
    ("linalg_trsm", {}, [((4, 200, 200), "float64"), ((4, 200, 150), "float64")]),
    (
        "linalg_trmm",
        {"rightside": True, "transpose": True, "alpha": 2.0},
        [((4, 200, 200), "float32"), ((4, 150, 200), "float32")],
    ),
    ("linalg_trmm", {}, [((300, 300), "float64"), ((300, 100), "float64")]),
    ("linalg_potrf", {}, [((4, 200, 200), "float32")]),
    ("linalg_potri", {}, [((300, 300), "float32")]),
    ("linalg_inverse", {}, [((4, 200, 200), "float32")]),
    ("linalg_det", {}, [((2, 2, 200, 200), "float32")]),
    ("linalg_det", {}, [((300, 300), "float64")]),
    ("linalg_sumlogdiag", {}, [((4, 200, 200), "float32")]),
    ("linalg_extracttrian", {"offset": 2}, [((4, 200, 200), "float64")]),
    ("linalg_extracttrian", {"lower": False}, [((4, 200, 200), "float32")]),
    ("linalg_maketrian", {"offset": -2, "lower": False}, [((4, 20100), "float64")]),
    ("linalg_maketrian", {"offset": 3}, [((20100,), "float32")]),
    ("linalg_makediag", {"offset": -2}, [((4, 300), "float64")]),
    ("LRN", {"nsize": 5}, [((8, 16, 32, 32), "float32")]),
    ("LRN", {"nsize": 3}, [((8, 16, 32, 32), "float16")]),
    ("UpSampling", {"scale": 2, "sample_type": "nearest"}, [((8, 16, 32, 32), "float32")]),
    ("GroupNorm", {"num_groups": 4}, [((8, 16, 32, 32), "float32"), ((4,), "float32"), ((4,), "float32")]),
    ("GroupNorm", {"num_groups": 2}, [((8, 16, 32, 32), "float16"), ((2,), "float16"), ((2,), "float16")]),
    ("SoftmaxActivation", {"mode": "channel"}, [((8, 16, 32, 32), "float32")]),
    ("Crop", {"h_w": [16, 16], "center_crop": True}, [((8, 16, 32, 32), "float32")]),
    ("scatter_nd", {"shape": [4000, 300]}, [((2000, 300), "float32"), ((1, 2000), "float32")]),
    ("random_pdf_normal", {}, [((300, 400), "float32"), ((300,), "float32"), ((300,), "float32")]),
    ("random_pdf_gamma", {"is_log": True}, [((300, 400), "float32"), ((300,), "float32"), ((300,), "float32")]),
    ("LRN", {"nsize": 9}, [((8, 4, 32, 32), "float64")]),  # (a window past half the channels)
    (
        "UpSampling",
        {"scale": 2, "sample_type": "bilinear", "num_filter": 16},
        [((8, 16, 32, 32), "float32"), ((16, 1, 4, 4), "float32")],
    ),
    (
        "UpSampling",
        {"scale": 2, "sample_type": "nearest", "multi_input_mode": "sum", "num_args": 2},
        [((8, 16, 32, 32), "float32"), ((8, 16, 16, 16), "float32")],
    ),
    (
        "UpSampling",
        {"scale": 4, "sample_type": "nearest", "num_args": 2},
        [((4, 8, 16, 16), "float16"), ((4, 4, 32, 32), "float16")],
    ),
    ("SoftmaxActivation", {"mode": "instance"}, [((300, 400), "float16")]),
    ("SoftmaxActivation", {"mode": "instance"}, [((100000, 1), "float32")]),  # (sums as large as the data)
    ("GroupNorm", {"num_groups": 16}, [((8192, 16, 1), "float32"), ((16,), "float32"), ((16,), "float32")]),
    ("Crop", {"offset": [1, 2], "h_w": [5, 7]}, [((8, 16, 32, 32), "float16"), ((1, 1, 5, 7, 1), "float16")]),
    ("SVMOutput", {}, [((3000, 100), "float32"), ((3000,), "float32")]),
    ("SVMOutput", {"use_linear": True}, [((300, 10, 100), "float64"), ((300, 10), "float64")]),
    ("scatter_nd", {"shape": [6]}, [((100000,), "float32"), ((1, 100000), "float32")]),  # (more indices than elements)
    ("random_pdf_uniform", {}, [((300, 400), "float32"), ((300,), "float32"), ((300,), "float32")]),
    ("random_pdf_exponential", {}, [((300, 400), "float64"), ((300,), "float64")]),
    ("random_pdf_poisson", {"is_log": True}, [((300, 400), "float32"), ((300,), "float32")]),
    ("random_pdf_negative_binomial", {}, [((300, 400), "float32"), ((300,), "float32"), ((300,), "float32")]),
    (
        "random_pdf_generalized_negative_binomial",
        {},
        [((300, 400), "float16"), ((300, 400), "float16"), ((300, 400), "float16")],
    ),
    ("ravel_multi_index", {"shape": [6, 7, 8]}, [((3, 100000), "float32")]),
    ("unravel_index", {"shape": [6, 7, 8]}, [((100000,), "float64")]),
    # 3-D windows (Convolution, Deconvolution, Pooling)
    (
        "Convolution",
        {"kernel": [3, 3, 3], "num_filter": 6, "pad": [1, 1, 1]},
        [((2, 4, 12, 14, 16), "float32"), ((6, 4, 3, 3, 3), "float32"), ((6,), "float32")],
    ),
    (
        "Convolution",
        {
            "kernel": [2, 3, 3],
            "num_filter": 4,
            "num_group": 2,
            "stride": [1, 2, 2],
            "dilate": [2, 1, 1],
            "no_bias": True,
        },
        [((2, 4, 12, 20, 20), "float64"), ((4, 2, 2, 3, 3), "float64")],
    ),
    (
        "Deconvolution",
        {"kernel": [2, 3, 3], "num_filter": 4, "stride": [2, 2, 2], "pad": [0, 1, 1], "no_bias": False},
        [((2, 6, 6, 8, 8), "float32"), ((6, 4, 2, 3, 3), "float32"), ((4,), "float32")],
    ),
    ("Pooling", {"kernel": [2, 2, 2], "stride": [2, 2, 2]}, [((2, 4, 16, 16, 16), "float32")]),
    (
        "Pooling",
        {"kernel": [3, 3, 3], "pad": [1, 1, 1], "pool_type": "avg", "count_include_pad": False},
        [((2, 4, 12, 12, 12), "float32")],
    ),
    ("Pooling", {"global_pool": True, "pool_type": "sum"}, [((2, 4, 10, 12, 14), "float16")]),
    ("col2im", {"kernel": [3, 3, 3], "pad": [1, 1, 1], "output_size": [12, 12, 12]}, [((2, 108, 1728), "float32")]),
    ("im2col", {"kernel": [1, 1, 1], "pad": [6, 6, 6], "stride": [5, 5, 5]}, [((1, 1, 10, 10, 10), "float32")]),
    ("im2col", {"kernel": [3], "pad": [4]}, [((2, 3, 50), "float64")]),
    ("col2im", {"kernel": [3], "pad": [2], "output_size": [20]}, [((2, 9, 22), "float32")]),
    ("Pooling", {"global_pool": True, "pool_type": "avg"}, [((2, 4, 96, 96), "float32")]),  # (one move)
    # spatial sampling (ROIPooling, BilinearSampler, GridGenerator, SpatialTransformer, Correlation)
    ("GridGenerator", {"transform_type": "affine", "target_shape": [300, 400]}, [((4, 6), "float32")]),
    ("GridGenerator", {"transform_type": "warp"}, [((4, 2, 200, 300), "float64")]),
    ("BilinearSampler", {}, [((4, 8, 64, 64), "float32"), ((4, 2, 100, 120), "float32")]),
    ("BilinearSampler", {}, [((4, 8, 64, 64), "float16"), ((4, 2, 50, 60), "float16")]),
    ("BilinearSampler", {}, [((2, 32, 200, 200), "float64"), ((2, 2, 20, 30), "float64")]),  # (data past the output)
    (
        "SpatialTransformer",
        {"transform_type": "affine", "sampler_type": "bilinear", "target_shape": [100, 120]},
        [((4, 8, 64, 64), "float32"), ((4, 6), "float32")],
    ),
    # (the COSTLY inputs are in [1, 5): batch indices of 8 samples, regions of a few pixels)
    ("ROIPooling", {"pooled_size": [7, 7], "spatial_scale": 1.0}, [((8, 64, 32, 32), "float32"), ((99, 5), "float32")]),
    ("ROIPooling", {"pooled_size": [2, 3], "spatial_scale": 0.5}, [((8, 256, 16, 9), "float16"), ((99, 5), "float16")]),
    (
        "roi_pooling_argmax",
        {"pooled_size": [4, 4], "spatial_scale": 1.0},
        [((8, 64, 32, 32), "float64"), ((200, 5), "float64")],
    ),
    ("Correlation", {}, [((4, 32, 48, 48), "float32"), ((4, 32, 48, 48), "float32")]),
    (
        "Correlation",
        {"kernel_size": 3, "max_displacement": 4, "stride2": 2, "pad_size": 4, "is_multiply": False},
        [((2, 16, 40, 40), "float16"), ((2, 16, 40, 40), "float16")],
    ),
    (
        "correlation_grad",
        {"max_displacement": 2, "stride1": 2, "pad_size": 2, "which": 1},
        [((2, 25, 20, 20), "float64"), ((2, 16, 40, 40), "float64"), ((2, 16, 40, 40), "float64")],
    ),
    (
        "correlation_sign_dot",
        {"is_multiply": False},
        [((2, 16, 40, 40), "float32"), ((2, 16, 40, 40), "float32"), ((2, 16, 40, 40), "float32")],
    ),
    # CTCLoss, random_pdf_dirichlet, multi_all_finite
    ("CTCLoss", {}, [((300, 8, 40), "float32"), ((8, 60), "float32")]),  # (labels and lengths: 1 to 5)
    ("CTCLoss", {"use_data_lengths": True}, [((100, 16, 300), "float64"), ((16, 20), "float64"), ((16,), "float64")]),
    ("random_pdf_dirichlet", {}, [((300, 100, 10), "float32"), ((300, 10), "float32")]),  # (off the simplex: no matter)
    ("random_pdf_dirichlet", {"is_log": True}, [((4, 50, 2000), "float16"), ((4, 2000), "float16")]),
    ("multi_all_finite", {"num_arrays": 2}, [((300, 400), "float32"), ((100000,), "float32")]),
    # nd.contrib's
    ("contrib_isnan", {}, [((1000, 1000), "float32")]),
    ("contrib_isfinite", {}, [((1000, 1000), "int32")]),
    ("contrib_allclose", {}, [((1000, 1000), "float32"), ((1000, 1000), "float32")]),
    ("contrib_allclose", {"equal_nan": False}, [((1000, 1000), "float16"), ((1000, 1000), "float16")]),
    ("contrib_arange_like", {"repeat": 3}, [((1000, 1000), "float32")]),
    ("contrib_arange_like", {"axis": 1, "start": 2.5}, [((10, 100000), "int32")]),
    ("contrib_index_array", {}, [((100, 100, 100), "float32")]),
    ("contrib_index_array", {"axes": [2]}, [((100, 100, 100), "float16")]),
    ("contrib_index_copy", {}, [((1000, 1000), "float32"), ((400,), "float32"), ((400, 1000), "float32")]),
    ("contrib_div_sqrt_dim", {}, [((1000, 1000), "float32")]),
    ("contrib_div_sqrt_dim", {}, [((1000, 1000), "int32")]),
    ("contrib_quadratic", {"a": 2.0, "b": -1.0, "c": 0.5}, [((1000, 1000), "float32")]),
    ("contrib_quadratic", {"a": 2.0, "b": -1.0, "c": 0.5}, [((1000, 1000), "float16")]),
    ("contrib_quadratic", {"a": 2.0, "b": -1.0, "c": 0.5}, [((1000, 1000), "int32")]),
    ("contrib_gradientmultiplier", {"scalar": -1.0}, [((1000, 1000), "float32")]),
    ("contrib_round_ste", {}, [((1000, 1000), "float32")]),
    ("contrib_sign_ste", {}, [((1000, 1000), "float64")]),
    ("contrib_BilinearResize2D", {"height": 96, "width": 80}, [((4, 16, 64, 64), "float32")]),
    ("contrib_BilinearResize2D", {"height": 30, "width": 200, "align_corners": False}, [((4, 16, 64, 64), "float16")]),
    ("contrib_BilinearResize2D", {"mode": "to_odd_up"}, [((2, 8, 64, 64), "float64")]),
    ("contrib_AdaptiveAvgPooling2D", {"output_size": [7]}, [((8, 32, 64, 64), "float32")]),
    ("contrib_AdaptiveAvgPooling2D", {"output_size": [100, 3]}, [((8, 32, 64, 64), "float16")]),
    # int64 index arrays made of narrower indices, float64 draws, elementwise temporaries
    ("gather_axis", {"axis": 0}, [((2000, 500), "float32"), ((2000, 500), "int8")]),
    ("take", {}, [((8, 4), "float32"), ((1000000,), "int8")]),
    ("Embedding", {"input_dim": 8, "output_dim": 4}, [((1000000,), "int8"), ((8, 4), "float32")]),
    ("gather_nd", {}, [((8,), "float32"), ((1, 1000000), "int8")]),
    ("one_hot", {"depth": 6, "dtype": "int8"}, [((1000000,), "int8")]),
    ("one_hot", {"depth": 6, "dtype": "int8"}, [((1000, 500, 2), "int8")]),
    ("SequenceReverse", {}, [((1000000, 1), "int8")]),
    ("SequenceReverse", {}, [((500, 2000, 1), "float16")]),
    ("Dropout", {"p": 0.5}, [((1000000,), "float16")]),
    ("smooth_l1", {}, [((1000000,), "float32")]),
    ("smooth_l1", {}, [((1000000,), "int32")]),
    # the optimizers' array ops
    ("multi_sum_sq", {"num_arrays": 2}, [((1000, 1000), "float16"), ((300, 1000), "float16")]),
    ("multi_lars", {"eta": 0.5, "eps": 0.1}, [((1000000,), "float32")] * 4),
    (
        "lamb_update_phase2",
        {"lr": 0.1},
        [((1000, 1000), "float32"), ((1000, 1000), "float32"), ((1,), "float32"), ((1,), "float32")],
    ),
]


@pytest.mark.parametrize("name, at, inputs", COSTLY, ids=[f"{c[0]}-{i}" for i, c in enumerate(COSTLY)])
def test_an_ops_declared_working_arrays_bound_what_it_makes(name, at, inputs):
    """``scratch`` and ``vjp_scratch`` are what the quota checks: each must bound what the op's
    forward and VJP make besides their results, within a tenth (measured with tracemalloc;
    numpy reports its allocations to it), or a session passes its quota unseen."""
    rng = np.random.default_rng(0)
    values = []
    for k, (shape, dtype) in enumerate(inputs, 1):
        value = (rng.random(shape) * 4 + 1).astype(dtype)  # positive: pow and div have gradients
        if name == "sample_multinomial":  # distributions along the last axis
            value = (value / value.sum(axis=-1, keepdims=True)).astype(dtype)
        elif name == "linalg_potrf":  # symmetric positive definite, well conditioned (in float32 too)
            value = (value @ value.swapaxes(-1, -2) + shape[-1] * np.eye(shape[-1])).astype(dtype)
        elif name.startswith("linalg_") and k == 1 and len(shape) >= 2 and shape[-1] == shape[-2]:
            value = (value * 0.01 + np.eye(shape[-1])).astype(dtype)  # well conditioned, its determinant finite
        elif name == "contrib_index_copy" and k == 2:  # distinct rows of the first input
            value = rng.permutation(inputs[0][0][0])[: shape[0]].astype(dtype)
        values.append(value)
    check_working_arrays(name, at, values, variables=1)


def check_working_arrays(name: str, at: dict, values: list[np.ndarray], variables: int | None = None) -> None:
    """Run op ``name`` on ``values`` in a session, recorded with its first ``variables`` inputs
    as variables (None: all) when it is differentiable, then a backward pass, and check with
    tracemalloc that its declared working arrays (``scratch``, ``vjp_scratch``) bound what each
    makes besides its result (the output; the cotangents), within a tenth and 64 KiB."""
    import tracemalloc

    from gradserve.engine.optable import OPS, Spec

    op = OPS[name]
    s = Session("m", limits=Limits(max_session_bytes=1 << 34, max_array_bytes=1 << 33))
    ins = list(range(1, len(values) + 1))
    ok(s, *[{"op": "array", "out": [k], "at": {"value": v}} for k, v in zip(ins, values)])
    diff = op.differentiable
    if diff:
        ok(s, *[{"op": "attach_grad", "in": [k]} for k in ins[:variables]])
    specs = [Spec(v.shape, v.dtype.name) for v in values]
    parsed = op.parse(at)
    mode = 3 if diff else 0
    slack = 1 << 16
    # once untraced: a kernel compiled at its first call (numba) allocates what the op does not
    ok(s, {"op": name, "in": ins, "out": [48], "at": at, "mode": mode})
    if diff:
        ok(s, {"op": "sum", "in": [48], "out": [49], "mode": 3}, {"op": "backward", "in": [49], "mode": 2})
    ok(s, {"op": "free", "in": [48]})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ok(s, {"op": name, "in": ins, "out": [50], "at": at, "mode": mode})
        made = tracemalloc.get_traced_memory()[1] - base
        out = s.arrays[50]
        forward = op.scratch(parsed, *specs) if op.scratch else 0
        assert made <= 1.1 * (forward + out.nbytes) + slack, (made, forward, out.nbytes)
        if diff:
            ok(s, {"op": "sum", "in": [50], "out": [51], "mode": 3})
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            ok(s, {"op": "backward", "in": [51], "mode": 2})
            made = tracemalloc.get_traced_memory()[1] - base
            cotangents = out.nbytes + 2 * sum(s.arrays[h].nbytes for h in ins)
            backward = op.vjp_scratch(parsed, *specs) if op.vjp_scratch else 0
            assert made <= 1.1 * (backward + cotangents) + slack, (made, backward, cotangents)
    finally:
        tracemalloc.stop()


MADE = [
    ("arange", {"start": 0, "stop": 1 << 20, "dtype": "int8"}),
    ("arange", {"start": 0, "stop": 1 << 19, "dtype": "float16", "repeat": 2}),
    ("arange", {"start": 0, "stop": 1 << 19, "dtype": "float32", "repeat": 3}),
    ("linspace", {"start": 0, "stop": 1, "num": 1 << 20, "dtype": "float16"}),
    ("random_uniform", {"shape": [1 << 20], "dtype": "float16"}),
    ("random_normal", {"shape": [1 << 20], "dtype": "float64"}),
    ("random_randint", {"low": 0, "high": 9, "shape": [1 << 20], "dtype": "int32"}),
    ("random_poisson", {"lam": 3.0, "shape": [1 << 20], "dtype": "float16"}),
]


@pytest.mark.parametrize("name, at", MADE, ids=[f"{m[0]}-{i}" for i, m in enumerate(MADE)])
def test_a_creations_declared_working_arrays_bound_what_it_makes(name, at):
    """As above, for ops made of attributes alone: arange counted in int64 or float32 and then
    copied into an int8 took 24 bytes an element unseen; a draw of uint8 is made in float64."""
    import tracemalloc

    from gradserve.engine.optable import OPS

    op = OPS[name]
    s = Session("m", limits=Limits(max_session_bytes=1 << 34, max_array_bytes=1 << 33))
    ok(s, {"op": name, "out": [1], "at": at}, free(1))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ok(s, {"op": name, "out": [2], "at": at})
        made = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    scratch = op.scratch(op.parse(at)) if op.scratch else 0
    assert made <= 1.1 * (scratch + s.arrays[2].nbytes) + (1 << 16), (made, scratch, s.arrays[2].nbytes)


def test_working_arrays_are_held_to_the_sessions_room_not_to_the_per_array_limit():
    """A hook gives the sum of an op's working arrays: a topk of 4 MB made three of 8 MB each
    (24 MB in all) under a 16 MB per-array limit and was refused by it, with room to spare."""
    s = Session("t", limits=Limits(max_session_bytes=256 << 20, max_array_bytes=16 << 20))
    ok(s, {"op": "random_normal", "out": [1], "at": {"shape": [1_000_000]}})
    reply = ok(
        s, {"op": "topk", "in": [1], "out": [2], "at": {"k": 1, "ret_typ": "value"}}, {"op": "read", "in": [1, 2]}
    )
    assert reply["values"][1][0] == reply["values"][0].max()


def test_ops_on_nothing_take_no_time_and_no_axis_is_past_the_limit():
    """A repeat, tile or one_hot of an empty array is empty at once (numpy's loops went over
    every repetition of nothing: 2**30 of them held the server for seconds, and the result had
    no bytes for a quota to refuse); an empty result's other axes are bounded too."""
    import time

    from gradserve.engine.session import MAX_DIM

    s = Session("empty")
    ok(s, {"op": "zeros", "out": [1], "at": {"shape": [1, 0]}})
    start = time.perf_counter()
    ok(
        s,
        {"op": "repeat", "in": [1], "out": [2], "at": {"repeats": 1 << 30, "axis": 0}},
        {"op": "tile", "in": [1], "out": [3], "at": {"reps": [1 << 30, 1]}},
        {"op": "one_hot", "in": [1], "out": [4], "at": {"depth": 1 << 30}},
    )
    assert time.perf_counter() - start < 0.5
    assert [s.get(h).shape for h in (2, 3, 4)] == [(1 << 30, 0), (1 << 30, 0), (1, 0, 1 << 30)]
    ok(
        s,
        {"op": "zeros", "out": [6], "at": {"shape": [1 << 30, 0]}},
        {"op": "zeros", "out": [7], "at": {"shape": [1, 1 << 30, 0]}},
    )
    start = time.perf_counter()
    ok(
        s,  # (no index arrays of the long axis)
        {"op": "SequenceReverse", "in": [6], "out": [8]},
        {"op": "SequenceLast", "in": [7], "out": [9], "at": {"axis": 1}},
    )
    assert time.perf_counter() - start < 0.5 and s.get(9).shape == (1, 0)
    err = run(s, {"op": "repeat", "in": [1], "out": [5], "at": {"repeats": 1 << 62, "axis": 0}})["error"]
    assert err["kind"] == "ShapeError" and f"over the limit of {MAX_DIM}" in err["message"] and 5 not in s.arrays


def test_the_copies_replies_keep_for_a_retry_are_bounded_for_the_user_not_per_session():
    """A reply's copies may pass the limit of the arrays held (a full session can still read),
    by a session's limit once for all the user's sessions together: eight sessions of one user
    each keeping 7 MiB of copies held 64 MiB against a user limit of 16."""
    from gradserve.server import Settings
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(max_session_bytes=8 << 20, max_user_bytes=16 << 20))
    sessions = [store.create("alice") for _ in range(3)]
    mib = 1 << 18  # float32s
    for s in sessions:
        ok(s, ones(1, mib))
    reads = {"seq": 1, "ops": [{"op": "read", "in": [1]}] * 3}  # 3 MiB of copies each
    assert "error" not in sessions[0].run_batch(reads) and sessions[0].reply_bytes == 3 << 20
    assert "error" not in sessions[1].run_batch(reads)
    err = sessions[2].run_batch(reads)["error"]  # 6 MiB kept by the others, 3 more: past 8
    assert err["kind"] == "QuotaExceeded" and "the user's other replies" in err["message"]
    assert "error" not in sessions[0].run_batch({"seq": 2, "ops": []})  # its reply let go
    assert "error" not in sessions[2].run_batch({"seq": 2, "ops": [{"op": "read", "in": [1]}] * 3})
    bob = store.create("bob")
    ok(bob, ones(1, mib))
    assert "error" not in bob.run_batch(reads)  # another user's own


def test_an_in_place_update_is_timed_and_judged_in_a_slice_as_an_op_is(monkeypatch):
    """``x %= v`` of 16 MiB of 1e300 by 1e-300 held the event loop for 3.7 s: ``update`` was
    never timed. It is now, keyed by its fn and dtype: not timed yet, or expected past the
    slice, it is left for the thread; quick, it runs in the slice. A float mod's time depends
    on its values, which a rate learnt on plain ones does not bound: a large one is the
    thread's whatever its rate (as the mod ops are)."""
    import time

    rates: dict = {}
    monkeypatch.setattr(slices, "RATES", rates)
    s = Session("update")
    ok(s, ones(1, 1 << 16))  # 256 KiB
    div = {"op": "update", "in": [1], "at": {"fn": "div", "scalar": 2.0}}

    def in_slice(ins: dict) -> bool:
        job = s.begin({"ops": [ins]})
        done = job.run(deadline=time.perf_counter() + 60)
        if not done:
            assert job.next == 0  # not started
            job.run()
        assert "error" not in job.finish()
        return done

    assert not in_slice(div)  # not timed yet: the thread's, which times it
    (key,) = [k for k in rates if k[0] == "update"]
    assert key[:2] == ("update", "div")
    rates[key] = (0.01, rates[key][1])  # quick
    assert in_slice(div)
    rates[key] = (1e3, rates[key][1])  # as a stalled machine measured it
    assert not in_slice(div)
    mod = {"op": "update", "in": [1], "at": {"fn": "mod", "scalar": 0.75}}
    assert not in_slice(mod)
    rates[("update", "mod", np.dtype("float32").num)] = (0.01, 1 << 20)  # quick on plain values
    assert not in_slice(mod)  # still the thread's
    np.testing.assert_allclose(s.get(1), 0.125 % 0.75)
    ok(s, {"op": "ones", "out": [2], "at": {"shape": [1 << 16], "dtype": "int32"}})
    int_mod = {"op": "update", "in": [2], "at": {"fn": "mod", "scalar": 3.0}}
    in_slice(int_mod)  # (times it)
    rates[("update", "mod", np.dtype("int32").num)] = (0.01, 1 << 20)
    assert in_slice(int_mod)  # an integer mod's cost is its size's
    mod_op = {"op": "mod_scalar", "in": [1], "out": [3], "at": {"scalar": 0.5}}
    in_slice(mod_op)
    for k in [k for k in rates if k[0] == "mod_scalar"]:
        rates[k] = (0.01, 1 << 20)
    assert not in_slice({**mod_op, "out": [4]})
    by_alias = {"op": "broadcast_mod", "in": [1, 1], "out": [5]}  # (MXNet's name of mod: the same op)
    in_slice(by_alias)
    for k in [k for k in rates if k[0] == "mod"]:
        rates[k] = (0.01, 1 << 20)
    assert not in_slice({**by_alias, "out": [6]})
