"""Nothing lost when the server restarts: sessions are snapshotted to the data
directory and restored at start, and a client in the middle of its work goes on."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import gradserve
from gradserve import autograd, nd
from gradserve.engine import snapshot
from gradserve.engine.session import Session
from gradserve.server import Settings

from .conftest import LiveServer


def test_a_client_carries_on_across_a_server_restart(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with LiveServer(settings) as first:
        port = first.port
        client = gradserve.connect(first.url, seed=5)
        x = nd.array([1.0, 2.0, 3.0])
        x.attach_grad()
        with autograd.record():
            y = (x * x).sum()
        y.backward()
        before = x.grad.asnumpy()
        nd.random.seed(7)
        noise = nd.random.normal(shape=(4,))
        nd.waitall()
    assert (tmp_path / "sessions" / f"{client.transport.session_id}.npz").exists()
    try:
        with LiveServer(Settings(data_dir=tmp_path), port=port):
            np.testing.assert_array_equal(x.grad.asnumpy(), before)  # same session, same handles
            with autograd.record():
                z = (x * 3).sum()
            z.backward()
            assert x.grad.asnumpy().tolist() == [3, 3, 3]
            drawn = noise.asnumpy(), nd.random.normal(shape=(2,)).asnumpy()  # the generator went on from where it was
        gradserve.connect()  # the same draws with no restart between
        nd.random.seed(7)
        unbroken = nd.random.normal(shape=(4,)).asnumpy(), nd.random.normal(shape=(2,)).asnumpy()
        np.testing.assert_array_equal(drawn[0], unbroken[0])
        np.testing.assert_array_equal(drawn[1], unbroken[1])
    finally:
        gradserve.set_current(None)


def test_a_hybridized_step_carries_on_across_a_server_restart(tmp_path):
    with LiveServer(Settings(data_dir=tmp_path)) as first:
        port = first.port
        gradserve.connect(first.url)
        w = nd.array([1.0, -2.0])
        w.attach_grad()

        @gradserve.hybridize
        def step(x):
            with autograd.record():
                loss = ((w * x) ** 2).sum()
            loss.backward()
            w[:] = w - 0.125 * w.grad
            return loss

        x = nd.array([1.0, 1.0])
        losses = [step(x).asscalar() for _ in range(3)]
    try:
        with LiveServer(Settings(data_dir=tmp_path), port=port):
            losses += [step(x).asscalar() for _ in range(2)]  # the program came back with the session
        assert step.traces == 1
        want, wv = [], np.array([1.0, -2.0])
        for _ in range(5):
            want.append(float((wv**2).sum()))
            wv = wv - 0.125 * 2 * wv
        np.testing.assert_allclose(losses, want, rtol=1e-6)
    finally:
        gradserve.set_current(None)


def test_a_client_carries_on_after_giving_up_on_a_server_that_was_down(tmp_path):
    """A batch sent while the server is down fails (ConnectionLost), and the client cannot
    tell whether it ran. It is kept, and sent again under its seq before the next batch when
    the server is back: nothing the program did is lost (its arrays raised ChangeLost or
    the lost batch's error for good), and what is queued meanwhile waits behind it."""
    from gradserve.transport import ConnectionLost

    with LiveServer(Settings(data_dir=tmp_path)) as first:
        port, url = first.port, first.url
        client = gradserve.Client(gradserve.Http(url, retries=1))
        gradserve.set_current(client)
        x = nd.array([1.0, 2.0])
        w = nd.zeros(2)
        nd.waitall()
    try:
        lost = x * 10
        w += 1
        with pytest.raises(ConnectionLost):
            lost.wait_to_read()
        w += 1
        with pytest.raises(ConnectionLost):  # still down: both wait
            w.wait_to_read()
        with LiveServer(Settings(data_dir=tmp_path), port=port):
            assert (x + 1).asnumpy().tolist() == [2, 3]
            assert lost.asnumpy().tolist() == [10, 20]
            assert w.asnumpy().tolist() == [2, 2]  # each change once
            assert (x * 2).asnumpy().tolist() == [2, 4]
    finally:
        gradserve.set_current(None)


def test_snapshots_keep_generator_state_sequence_and_gradient_buffers(tmp_path):
    s = Session("s1", owner="alice", seed=3)
    s.run_batch(
        {
            "seq": 1,
            "ops": [
                {"op": "array", "out": [1], "at": {"value": np.arange(3.0, dtype=np.float32)}},
                {"op": "attach_grad", "in": [1]},
                {"op": "mul", "in": [1, 1], "out": [2], "mode": 3},
                {"op": "backward", "in": [2]},
                {"op": "grad", "in": [1], "out": [3]},
                {"op": "zeros", "out": [4], "at": {"shape": [3]}},
                {"op": "zeros", "out": [5], "at": {"shape": [3]}},
                {"op": "mark_variables", "in": [4, 5]},
                {"op": "read", "in": [3]},
            ],
        }
    )
    snapshot.save(s, tmp_path / "s1.npz")
    t = snapshot.load(tmp_path / "s1.npz")
    assert (t.id, t.owner, t.seq) == ("s1", "alice", 1)
    assert t.arrays[3] is t.nodes[1].grad and t.nodes[4].grad is t.arrays[5]  # aliases survive
    assert t.run_batch({"seq": 1, "ops": []})["values"][0].tolist() == [0, 2, 4]  # the retry still replays
    draw = {"seq": 2, "ops": [{"op": "random_normal", "out": [9], "at": {"shape": [3]}}, {"op": "read", "in": [9]}]}
    np.testing.assert_array_equal(s.run_batch(draw)["values"][0], t.run_batch(draw)["values"][0])


def test_snapshots_keep_views_as_views_and_count_them_once(tmp_path):
    """Views come back sharing their memory (an in-place change through one shows in the
    other after a restart too), written and counted once: a 1 MB array with forty views
    does not come back as 41 MB."""
    s = Session("v")
    ops = [
        {"op": "ones", "out": [1], "at": {"shape": [250_000]}},
        {"op": "attach_grad", "in": [1]},
        {"op": "grad", "in": [1], "out": [2]},
        {"op": "getitem", "in": [2], "out": [3], "at": {"key": [[0, 10, None]]}},  # a view of the gradient
        {"op": "attach_grad", "in": [1]},  # 2 is now an old buffer, no variable's
        {"op": "array", "out": [4], "at": {"value": np.frombuffer(bytearray(16), dtype=np.float32)}},
    ]
    ops += [{"op": "reshape", "in": [1], "out": [10 + k], "at": {"shape": [500, 500]}} for k in range(20)]
    ops += [{"op": "alias", "in": [1], "out": [40 + k]} for k in range(20)]
    ops += [{"op": "getitem", "in": [4], "out": [5], "at": {"key": [[1, 3, None]]}}]
    assert "error" not in s.run_batch({"ops": ops})
    snapshot.save(s, tmp_path / "v.npz")
    assert (tmp_path / "v.npz").stat().st_size < 3_100_000  # x, its gradient, the old one, once each
    t = snapshot.load(tmp_path / "v.npz")
    assert sorted(t.arrays) == sorted(s.arrays) and t.nbytes == s.nbytes
    t.run_batch({"ops": [{"op": "setitem", "in": [10], "at": {"key": [[0, 1, None]], "scalar": 7.0}}]})
    assert t.get(1)[0] == 7 and t.get(45)[0] == 7 and t.get(19)[0, 0] == 7  # one memory still
    t.run_batch({"ops": [{"op": "setitem", "in": [5], "at": {"key": [0], "scalar": 3.0}}]})
    assert t.get(4).tolist() == [0, 3, 0, 0]
    t.run_batch({"ops": [{"op": "setitem", "in": [2], "at": {"key": [0], "scalar": 5.0}}]})
    assert t.get(3)[0] == 5  # the old buffer and its view share it still
    assert t.nodes[45] is t.nodes[1]  # an alias is the same variable still
    t.run_batch({"ops": [{"op": "free", "in": list(t.arrays)}]})
    assert t.nbytes == 0


def test_a_busy_session_waits_for_the_next_snapshot(tmp_path):
    """A session held past the wait (a long batch, a reply to a slow client) is skipped,
    not waited for: the other sessions' snapshots are not held up, and it is written later."""
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    busy, idle = store.create("alice"), store.create("alice")
    for s in (busy, idle):
        s.run_batch({"ops": [{"op": "zeros", "out": [1], "at": {"shape": [2]}}]})
    assert snapshot.save(busy, tmp_path / "free.npz", 0.0) and (tmp_path / "free.npz").exists()  # free: written
    with busy.lock:
        assert not snapshot.save(busy, tmp_path / "held.npz", 0.05)
        assert not (tmp_path / "held.npz").exists()
        assert store.snapshot(wait_s=0.05) == 1  # the idle one
    assert store.snapshot(wait_s=0.05) == 1  # the busy one, now free


def test_the_shutdown_snapshot_waits_for_a_session_busy_past_its_wait(tmp_path):
    """At shutdown there is no next round: a session running a batch longer than the wait
    (send_stall_s) was passed over, and the batches acknowledged since its last snapshot were
    lost to the restart. The shutdown's snapshot (busy_wait_s below 0) waits for it."""
    import threading

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    busy, idle = store.create("alice"), store.create("alice")
    for s in (busy, idle):
        s.run_batch({"ops": [{"op": "zeros", "out": [1], "at": {"shape": [2]}}]})
    held = threading.Event()

    def long_batch() -> None:
        with busy.lock:
            held.set()
            time.sleep(0.5)

    worker = threading.Thread(target=long_batch)
    worker.start()
    held.wait()
    try:
        assert store.snapshot(wait_s=0.05, busy_wait_s=-1) == 2  # (both: the busy one once free)
    finally:
        worker.join()
    assert (tmp_path / "sessions" / f"{busy.id}.npz").exists()


def test_a_deleted_session_leaves_no_snapshot(tmp_path):
    import httpx

    with (
        LiveServer(Settings(data_dir=tmp_path, snapshot_interval_s=0.05)) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        sid = http.post("/v1/sessions").json()["id"]
        http.post(
            f"/v1/sessions/{sid}/batch", json={"seq": 1, "ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]}
        )
        path = tmp_path / "sessions" / f"{sid}.npz"
        import time

        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists()  # written by the periodic snapshot, before any shutdown
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204
        assert not path.exists()


def test_a_session_deleted_while_its_snapshot_is_written_does_not_come_back(tmp_path, monkeypatch):
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    save = snapshot.save

    def deleted_meanwhile(sess, path, wait_s=-1):  # the delete lands while the file is written
        store.delete(sess.id, "alice")
        return save(sess, path, wait_s)

    monkeypatch.setattr(snapshot, "save", deleted_meanwhile)
    assert store.snapshot() == 0
    assert not list((tmp_path / "sessions").glob("*.npz"))
    monkeypatch.setattr(snapshot, "save", save)
    assert SessionStore(Settings(data_dir=tmp_path)).restore() == 0


def test_a_batch_that_takes_the_session_before_its_snapshot_copies_it_is_known_kept(tmp_path):
    """A snapshot waits for its session's lock, and a batch queued for the session may take
    it first: the file then holds the batch, but the store recorded the version it read before
    the wait, so a forced stop told that batch's client it was not kept (a 503 to send it
    again), and the retry of a batch without seq (or of a REST route) ran it twice."""
    import threading

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    ran: list[dict] = []

    def batch() -> None:  # queued for the session while the snapshot waited for it
        ran.append(s.run_batch({"ops": [{"op": "update", "in": [1], "at": {"fn": "mul", "scalar": 3.0}}]}))

    real_lock = s.lock

    class HandedOn:
        """The session's lock as the snapshot asks for it: the queued batch takes it first."""

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if threading.current_thread() is not worker and not ran:
                worker.start()
                worker.join(5)
            return real_lock.acquire(blocking, timeout)

        def release(self) -> None:
            real_lock.release()

        def locked(self) -> bool:
            return real_lock.locked()

    worker = threading.Thread(target=batch)
    read_before = s.version
    s.lock = HandedOn()
    try:
        assert store.snapshot() == 1
    finally:
        s.lock = real_lock
    assert ran and "error" not in ran[0] and s.version == read_before + 1
    assert snapshot.load(tmp_path / "sessions" / f"{s.id}.npz").get(1).tolist() == [3.0, 3.0]  # in the file
    assert store.kept(s)  # and known to be
    s.run_batch({"ops": [{"op": "free", "in": [1]}]})
    assert not store.kept(s)  # (a batch after the copy is not)


def test_a_corrupt_snapshot_is_skipped_not_fatal(tmp_path, caplog):
    from gradserve.server.store import SessionStore

    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "bad.npz").write_bytes(b"garbage")
    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    assert store.snapshot() == 1
    again = SessionStore(Settings(data_dir=tmp_path))
    with caplog.at_level("WARNING"):
        assert again.restore() == 1  # the good one
    assert again.get(s.id, "alice").get(1).tolist() == [1, 1]
    assert "bad.npz" in caplog.text
    with LiveServer(Settings(data_dir=tmp_path)) as srv:
        import httpx

        assert httpx.get(srv.url + "/v1/health").status_code == 200


def test_a_snapshot_reaches_the_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    """The file's bytes, then the folder's new entry, are flushed to the disk: after a power
    cut the snapshot is the old one or the new one, never an empty file under its name."""
    import os

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    s = Session("disk")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    path = tmp_path / "sessions" / "disk.npz"
    assert snapshot.save(s, path)
    folder = str(path.parent.resolve())
    assert len(synced) == 2 and synced[0].startswith(folder + "/.tmp-") and synced[1] == folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["disk.npz"]


def test_a_session_running_a_long_batch_is_not_expired_under_it():
    import time

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(session_ttl_s=0.01))
    s = store.create("alice")
    time.sleep(0.05)
    with s.lock:  # a batch running longer than the TTL
        assert store.expire() == 0
    assert store.expire() == 1


def test_a_session_is_used_as_its_batch_ends_not_only_as_it_starts():
    """A batch that ran longer than the TTL: its session was expired at the next round, right
    after its reply, with the reply a retry would read."""
    import time

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(session_ttl_s=0.2))
    s = store.create("alice")
    store.get(s.id, "alice")  # (a request: the session used as it starts)
    run = s.begin({"seq": 1, "ops": [{"op": "zeros", "out": [1], "at": {"shape": [2]}}]})
    time.sleep(0.3)  # (the batch holding its session past the TTL)
    assert store.expire() == 0
    run.run()
    run.finish()
    assert store.expire() == 0 and store.get(s.id, "alice") is s
    time.sleep(0.3)
    assert store.expire() == 1
    s = store.create("alice")  # one deleted while its batch runs leaves nothing behind
    run = s.begin({"seq": 1, "ops": [{"op": "zeros", "out": [1], "at": {"shape": [2]}}]})
    store.delete(s.id, "alice")
    run.run()
    run.finish()
    assert s.id not in store._used


def test_a_deleted_or_expired_session_is_freed_at_once_not_at_a_full_collection():
    """The store's hooks held the session itself (a closure over it: a cycle). The server runs
    with the collector frozen and its thresholds high, so a deleted session's arrays stayed
    until a full collection: 100 sessions of 20 MB made and deleted held 2 GB."""
    import gc
    import time
    import weakref

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(session_ttl_s=0.05))
    ops = [
        {"op": "ones", "out": [1], "at": {"shape": [1000]}},
        {"op": "attach_grad", "in": [1]},
        {"op": "sum", "in": [1], "out": [2], "mode": 3},
        {"op": "backward", "in": [2]},
        {
            "op": "define",
            "at": {"id": 1, "nargs": 1, "outputs": [-2], "program": [{"op": "relu", "in": [-1], "out": [-2]}]},
        },
        {"op": "call", "in": [1], "out": [3], "at": {"id": 1}},
    ]
    gc.disable()
    try:
        gone = []
        for how in ("delete", "expire"):
            s = store.create("alice")
            s.run_batch({"seq": 1, "ops": ops})
            ref = weakref.ref(s.arrays[1])  # (its arrays: a compiled Session takes no weak reference)
            if how == "delete":
                store.delete(s.id, "alice")
            else:
                time.sleep(0.1)
                assert store.expire() == 1
            del s
            gone.append(ref() is None)
    finally:
        gc.enable()
    assert gone == [True, True]


def test_a_snapshot_round_before_any_session_writes_nothing_and_logs_no_error(tmp_path, caplog):
    """The first rounds of a new data directory (no session yet): the record of last uses
    failed to write, its folder not made yet, and logged an error every round."""
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path / "new"))
    with caplog.at_level("ERROR", logger="gradserve"):
        assert store.snapshot() == 0
        s = store.create("alice")
        store.snapshot()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert (tmp_path / "new" / "sessions" / SessionStore.USED).exists() and s.id


def test_a_restart_keeps_the_sessions_idle_time(tmp_path):
    """A session's TTL counts from its last use, across restarts (each start set it afresh:
    a server restarted more often than the TTL expired nothing). Without the record of last
    uses, from its file's last write. One past its TTL is expired as it is restored (it was
    listed until the first housekeeping round)."""
    import os
    import time

    from gradserve.server.store import SessionStore

    settings = Settings(data_dir=tmp_path, session_ttl_s=60)
    store = SessionStore(settings)
    idle, used = store.create("alice"), store.create("alice")
    for s in (idle, used):
        s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    store._used[idle.id] -= 50  # idle for 50 s of its 60
    store.snapshot()
    again = SessionStore(settings)
    assert again.restore() == 2
    time.sleep(0.05)
    assert again.expire() == 0
    again._used[idle.id] -= 11  # 11 s more: past its TTL; the other is not
    assert again.expire() == 1 and len(again) == 1 and used.id in again._sessions

    (tmp_path / "sessions" / SessionStore.USED).unlink()
    path = tmp_path / "sessions" / f"{used.id}.npz"
    old = time.time() - 61
    os.utime(path, (old, old))  # written 61 s ago, and no record of a use since
    third = SessionStore(settings)
    assert third.restore() == 0 and not path.exists()  # expired as it was restored: never listed


def test_a_session_whose_snapshot_fails_does_not_keep_the_others_from_theirs(tmp_path, monkeypatch):
    """A full disk fails one session's write (a large one): the others are written all the
    same, the failure is counted, and the failed one is tried again at the next round."""
    from gradserve.server.store import SessionStore

    failures: list[int] = []
    store = SessionStore(Settings(data_dir=tmp_path), on_snapshot_failure=lambda: failures.append(1))
    big, small = store.create("alice"), store.create("bob")
    for s in (big, small):
        s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    save = snapshot.save

    def disk_full_for_big(sess, path, wait_s=-1):
        if sess is big:
            raise OSError(28, "No space left on device")
        return save(sess, path, wait_s)

    monkeypatch.setattr(snapshot, "save", disk_full_for_big)
    assert store.snapshot() == 1 and failures == [1]

    for error in (MemoryError("Unable to allocate 512. MiB for an array"), RuntimeError("unforeseen")):

        def failing_for_big(sess, path, wait_s=-1, error=error):  # no memory for the copy; anything else
            if sess is big:
                raise error
            return save(sess, path, wait_s)

        monkeypatch.setattr(snapshot, "save", failing_for_big)
        small.run_batch({"ops": [{"op": "ones", "out": [len(failures) + 1], "at": {"shape": [2]}}]})
        assert store.snapshot() == 1  # the small one all the same (each ended the round for all after it)
    assert failures == [1, 1, 1]
    assert [p.stem for p in (tmp_path / "sessions").glob("*.npz")] == [small.id]
    monkeypatch.setattr(snapshot, "save", save)
    assert store.snapshot() == 1  # the big one, at the next round


def test_a_snapshot_a_crash_left_half_written_is_removed_not_restored(tmp_path):
    """A crash between writing a snapshot's temporary file and renaming it leaves the file:
    it is never a session's state (that session may have been deleted since), and goes."""
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [2]}}]})
    assert store.snapshot() == 1
    folder = tmp_path / "sessions"
    (folder / f"{s.id}.npz").rename(folder / ".tmp-crash.npz")  # complete, but never renamed
    (folder / ".tmp-cut.npz").write_bytes(b"PK\x03\x04 cut short")
    again = SessionStore(Settings(data_dir=tmp_path))
    assert again.restore() == 0 and [p.name for p in folder.iterdir()] == [SessionStore.USED]


def test_a_server_that_lost_finished_batches_in_a_crash_says_so(tmp_path):
    """After a crash the server restarts from its last snapshot, which may be older than
    batches the client saw answered: the client says the session was lost (SessionLost), at
    once and for every later use, instead of going on with arrays that are not what it says."""
    import shutil

    from gradserve import SessionLost

    settings = Settings(data_dir=tmp_path, snapshot_interval_s=3600)
    folder = tmp_path / "sessions"
    with LiveServer(settings) as first:
        port = first.port
        client = gradserve.connect(first.url)
        u = nd.array([10.0, 20.0])
        u.wait_to_read()
        first.app.state.store.snapshot()  # the last snapshot before the crash
        early = tmp_path / "early.npz"
        shutil.copy(folder / f"{client.transport.session_id}.npz", early)
        for _ in range(3):
            u -= 1
            assert u.asnumpy().tolist()[0] < 10  # answered: the client saw these run
    shutil.copy(early, folder / f"{client.transport.session_id}.npz")  # as a crash would have left it
    try:
        with LiveServer(Settings(data_dir=tmp_path), port=port) as second:
            with pytest.raises(SessionLost, match="restarted from a snapshot"):
                u.asnumpy()
            with pytest.raises(SessionLost):
                nd.array([1.0, 2.0]).asnumpy()
            assert len(second.app.state.store) == 1
            client.close()  # the stale session goes from the server too
            assert len(second.app.state.store) == 0
    finally:
        gradserve.set_current(None)


def test_a_session_is_held_only_while_its_snapshot_copies_it(tmp_path, monkeypatch):
    """The file is written from copies: the session runs batches while its snapshot is on
    disk's time (a 2 GB session stalled every interval for the whole write), and the file
    holds the moment it was copied, not a change made during the write."""
    import threading

    s = Session("w")
    s.run_batch({"ops": [{"op": "ones", "out": [1], "at": {"shape": [4]}}]})
    writing, finish = threading.Event(), threading.Event()
    savez = np.savez

    def slow_disk(f, **arrays):
        writing.set()
        assert finish.wait(5)
        savez(f, **arrays)

    monkeypatch.setattr(snapshot.np, "savez", slow_disk)
    saver = threading.Thread(target=snapshot.save, args=(s, tmp_path / "w.npz"))
    saver.start()
    try:
        assert writing.wait(5)
        assert s.lock.acquire(timeout=1)  # free while the file is written
        s.lock.release()
        s.run_batch({"ops": [{"op": "setitem", "in": [1], "at": {"key": [0], "scalar": 7.0}}]})
    finally:
        finish.set()
        saver.join()
    monkeypatch.setattr(snapshot.np, "savez", savez)
    assert snapshot.load(tmp_path / "w.npz").get(1).tolist() == [1, 1, 1, 1]  # as it was when copied
    assert s.get(1).tolist() == [7, 1, 1, 1]


def test_a_snapshot_under_another_name_is_skipped_so_a_deleted_session_stays_deleted(tmp_path, caplog):
    """A copy of a snapshot left in the folder (an operator's backup) holds a session's id
    under another file name: restored by that id, it would bring the session back after its
    user deleted it (a delete removes ``{id}.npz``). Only a file named by its id is restored."""
    import shutil

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    assert "error" not in s.run_batch({"seq": 1, "ops": [{"op": "ones", "out": [1], "at": {"shape": [3]}}]})
    assert store.snapshot() == 1
    folder = next(p.parent for p in tmp_path.rglob(f"{s.id}.npz"))
    shutil.copy(folder / f"{s.id}.npz", folder / "backup-copy.npz")
    again = SessionStore(Settings(data_dir=tmp_path))
    assert again.restore() == 1 and "backup-copy.npz" in caplog.text and f"{s.id}.npz" in caplog.text
    again.delete(s.id, "alice")
    assert not (folder / f"{s.id}.npz").exists()
    assert SessionStore(Settings(data_dir=tmp_path)).restore() == 0  # the copy brings nothing back


def test_a_session_over_limits_lowered_since_its_snapshot_comes_back(tmp_path, caplog):
    """A restart with lower limits keeps a session that was within the old ones (it was
    skipped, its arrays lost): it is restored with a warning, reads and frees, and makes
    nothing new until it is under the limits again."""
    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    program = [{"op": "mul_scalar", "in": [-1], "out": [-2], "at": {"scalar": 2.0}}] * 1 + [
        {"op": "add", "in": [-2, -1], "out": [-3]}
    ]
    ops = [{"op": "ones", "out": [k], "at": {"shape": [1000]}} for k in range(1, 6)]
    ops.append({"op": "define", "at": {"id": 7, "nargs": 1, "program": program, "outputs": [-3]}})
    assert "error" not in s.run_batch({"seq": 1, "ops": ops})
    assert store.snapshot() == 1
    low = Settings(data_dir=tmp_path, max_program_steps=1, max_session_arrays=3, max_session_bytes=20_000)
    again = SessionStore(low)
    assert again.restore() == 1
    assert "restored over limits" in caplog.text and "max_program_steps" in caplog.text
    t = again.get(s.id, "alice")
    assert sorted(t.arrays) == [1, 2, 3, 4, 5] and t.get(5).sum() == 1000
    made = t.run_batch({"seq": 2, "ops": [{"op": "ones", "out": [6], "at": {"shape": [1]}}]})
    assert made["error"]["kind"] == "QuotaExceeded"  # over max_session_arrays: nothing new
    assert sorted(t.arrays) == [1, 2, 3, 4, 5]
    called = t.run_batch(
        {
            "seq": 3,
            "ops": [
                {"op": "free", "in": [1, 2, 3]},
                {"op": "call", "in": [4], "out": [6], "at": {"id": 7}},
                {"op": "read", "in": [6]},
            ],
        }
    )
    assert "error" not in called and called["values"][0][0] == 3.0  # freed, under the limits: its program runs
    refused = t.run_batch(
        {"seq": 4, "ops": [{"op": "define", "at": {"id": 8, "nargs": 1, "program": program, "outputs": [-3]}}]}
    )
    assert refused["error"]["kind"] == "QuotaExceeded"  # a new program is held to the lowered limit


def test_a_failed_housekeeping_round_does_not_stop_expiry_and_snapshots(tmp_path, monkeypatch, caplog):
    """A round that raises (here a snapshot with an unexpected error) is logged, and the next
    rounds run: the task ended for good on anything but an OSError, and with it expiry."""
    import time

    import httpx

    from gradserve.server.store import SessionStore

    rounds: list[int] = []

    def failing(self, wait_s=1.0, busy_wait_s=0.0):
        rounds.append(1)
        raise RuntimeError("a snapshot round that failed")

    monkeypatch.setattr(SessionStore, "snapshot", failing)
    settings = Settings(data_dir=tmp_path, snapshot_interval_s=0.05, session_ttl_s=0.3)
    with LiveServer(settings) as srv, httpx.Client(base_url=srv.url) as http:
        sid = http.post("/v1/sessions").json()["id"]
        deadline = time.monotonic() + 10

        def listed() -> bool:  # (the listing does not count as a use of the session)
            return sid in [x["id"] for x in http.get("/v1/sessions").json()]

        while listed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not listed()  # expired, in rounds after the failures
        assert len(rounds) >= 2
    assert "housekeeping round failed" in caplog.text


def test_a_session_busy_batch_after_batch_is_written_between_two_batches(tmp_path):
    """A session that runs batch after batch is free only between them: a round passes it
    over for the wait of every session, then waits for it (it was written only when a round
    happened to start between two batches: six intervals apart in a review's run)."""
    import threading
    import time

    from gradserve.server.store import SessionStore

    store = SessionStore(Settings(data_dir=tmp_path))
    s = store.create("alice")
    s.run_batch({"ops": [{"op": "zeros", "out": [1], "at": {"shape": [2]}}]})
    stop = threading.Event()

    def batches() -> None:  # each holds the session 0.2 s, with a short gap between them
        while not stop.is_set():
            with s.lock:
                time.sleep(0.2)
            time.sleep(0.002)

    worker = threading.Thread(target=batches)
    worker.start()
    try:
        time.sleep(0.05)
        assert store.snapshot(wait_s=0.0) == 0  # (no wait: passed over)
        assert store.snapshot(wait_s=0.0, busy_wait_s=5.0) == 1
    finally:
        stop.set()
        worker.join()
    assert (tmp_path / "sessions" / f"{s.id}.npz").exists()


def test_a_data_directory_that_cannot_keep_sessions_is_refused_at_start(tmp_path, capsys):
    """A data directory that is a file, or cannot be made, was taken: the server served and
    every snapshot failed (a log line each round), so a restart lost every session; and two
    servers on one directory overwrote each other's snapshots."""
    from gradserve.cli import main
    from gradserve.server.store import DataDirError, SessionStore

    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["serve", "--data-dir", str(afile)]) == 2
    assert "cannot be used: Not a directory" in capsys.readouterr().err
    store = SessionStore(Settings(data_dir=afile))
    with pytest.raises(DataDirError, match="cannot be used"):
        store.open()
    with LiveServer(Settings(data_dir=tmp_path / "data")) as srv:
        assert main(["serve", "--data-dir", str(tmp_path / "data")]) == 2
        assert "another gradserve server is using the data directory" in capsys.readouterr().err
        other = SessionStore(Settings(data_dir=tmp_path / "data"))
        with pytest.raises(DataDirError, match="another gradserve server"):
            other.open()
        assert srv.server.started
    other.open()  # the first server stopped: it let the directory go
    other.close()


def test_settings_out_of_range_are_refused_naming_the_setting(monkeypatch, capsys):
    """A port past 65535 listened on another (99999 - 65536), a snapshot interval of 0 spun a
    core, and a bad variable's message did not say which variable it was."""
    from gradserve.cli import main

    assert main(["serve", "--port", "99999"]) == 2
    assert "port (--port or GRADSERVE_PORT): Input should be less than or equal to 65535" in capsys.readouterr().err
    for name, value in [
        ("SNAPSHOT_INTERVAL_S", "0"),
        ("SESSION_TTL_S", "-1"),
        ("MAX_SESSION_BYTES", "2GB"),
        ("MAX_ARRAY_BYTES", "0"),
    ]:
        monkeypatch.setenv(f"GRADSERVE_{name}", value)
        assert main(["serve"]) == 2
        assert f"{name.lower()} (GRADSERVE_{name})" in capsys.readouterr().err
        monkeypatch.delenv(f"GRADSERVE_{name}")
    assert main(["serve", "--ssl-certfile", "/nonexistent.pem"]) == 2
    assert "ssl_certfile '/nonexistent.pem' is not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--log-level", "loud"])
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_a_backward_of_a_graph_recorded_before_a_restart_says_why_it_fails(tmp_path):
    """Recorded graphs are not kept: a backward of one after a restart failed with MXNet's
    generic "not in a computational graph", which a user whose code did record could not
    explain. It says the server restarted; an array made since (or a handle freed and made
    again) gets the generic words."""
    s = Session("s2", owner="alice")
    ops = [
        {"op": "array", "out": [1], "at": {"value": np.arange(3.0, dtype=np.float32)}},
        {"op": "attach_grad", "in": [1]},
        {"op": "mul", "in": [1, 1], "out": [2], "mode": 3},
        {"op": "sum", "in": [2], "out": [3], "mode": 3},
    ]
    assert "error" not in s.run_batch({"ops": ops})
    snapshot.save(s, tmp_path / "s2.npz")
    t = snapshot.load(tmp_path / "s2.npz")
    assert t.graphs_lost == {2, 3}
    err = t.run_batch({"ops": [{"op": "backward", "in": [3]}]})["error"]
    assert "not in a computational graph" in err["message"] and "before the server restarted" in err["message"]
    made_again = [{"op": "free", "in": [3]}, {"op": "ones", "out": [3], "at": {"shape": [1]}}]
    assert "error" not in t.run_batch({"ops": made_again})
    err = t.run_batch({"ops": [{"op": "backward", "in": [3]}]})["error"]
    assert "not in a computational graph" in err["message"] and "restarted" not in err["message"]
    again = [
        {"op": "free", "in": [2, 3]},
        *ops[2:],
        {"op": "backward", "in": [3]},
        {"op": "read", "in": [1], "at": {"grad": True}},
    ]
    assert t.run_batch({"ops": again})["values"][0].tolist() == [0.0, 2.0, 4.0]  # recorded again: as ever


@pytest.mark.parametrize("signals", [("SIGTERM", "SIGINT"), ("SIGINT", "SIGINT")])
def test_a_server_forced_to_stop_still_writes_its_sessions(tmp_path, signals):
    """A second signal while the server stops forces it to stop at once, and uvicorn then
    skips the app's shutdown, where sessions are written. After SIGTERM then Ctrl-C, the
    sessions changed since the last round were lost (uvicorn raised SIGTERM again before
    anything wrote them); after two Ctrl-C they were written only by the event loop's
    cancellation of the app's tasks, with a traceback. A real ``gradserve serve`` process."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from gradserve.transport import ConnectionLost

    from .conftest import free_port

    port = free_port()
    exe = Path(sys.executable).with_name("gradserve")
    cmd = [str(exe), "serve", "--port", str(port), "--data-dir", str(tmp_path), "--log-level", "warning"]
    env = {**os.environ, "GRADSERVE_SNAPSHOT_INTERVAL_S": "3600"}  # (no round writes it before the stop)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = gradserve.connect(f"http://127.0.0.1:{port}")
                break
            except ConnectionLost:
                assert proc.poll() is None and time.monotonic() < deadline, "gradserve serve did not come up"
                time.sleep(0.2)
        x = nd.array([1.0, 2.0, 3.0])
        x *= 2
        nd.waitall()
        for name in signals:  # the second while the first's shutdown waits for connections to close
            proc.send_signal(getattr(signal, name))
            time.sleep(0.02)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (tmp_path / "sessions" / f"{client.transport.session_id}.npz").exists()
    assert "forced to stop" in err  # (the second signal came while it stopped)
    assert "Traceback" not in err
    try:
        with LiveServer(Settings(data_dir=tmp_path), port=port):
            assert x.asnumpy().tolist() == [2.0, 4.0, 6.0]
    finally:
        gradserve.set_current(None)
        client.close()
