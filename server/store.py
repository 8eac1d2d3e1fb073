"""Sessions by id, owned by users, expired when idle."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ..engine import snapshot
from ..engine.errors import MXNetError, QuotaExceeded, SessionNotFound
from ..engine.session import Limits, Session
from .settings import Settings

log = logging.getLogger("gradserve")


LOCK = "server.lock"
"""A file of the data directory that the server serving it holds locked (``flock``)."""


class DataDirError(RuntimeError):
    """A data directory the server cannot keep sessions in (no directory, not writable, or
    another server's)."""


def lock_data_dir(folder: Path) -> int:
    """Make ``folder`` if need be, check that files can be written there, and lock it for this
    process: the descriptor that holds the lock (closing it lets go). A server that could not
    write its snapshots would lose every session at its next restart, and two servers on one
    directory would each overwrite the other's."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataDirError(f"the data directory {str(folder)!r} cannot be used: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirError(f"another gradserve server is using the data directory {str(folder)!r}") from None
    try:
        snapshot.write_atomically(folder / ".write-check", lambda f: f.write(b"ok"))
        (folder / ".write-check").unlink()
    except OSError as e:
        os.close(fd)
        raise DataDirError(f"the data directory {str(folder)!r} is not writable: {e.strerror or e}") from None
    return fd


class SessionStore:
    """Holds the live sessions; every lookup checks the owner."""

    REOPEN_S = 600.0
    """How long an open's token (``create``) answers a retry with the session it opened."""
    REOPEN_TOKENS = 256
    """The most tokens kept per user (the latest): a retry comes within seconds of its open."""

    def __init__(
        self,
        settings: Settings,
        on_batch: Callable[[int, str | None, int], None] | None = None,
        on_snapshot_failure: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_batch = on_batch
        self.on_snapshot_failure = on_snapshot_failure
        self._sessions: dict[str, Session] = {}
        self._owned: dict[str, dict[str, Session]] = {}  # owner -> their sessions by id
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()
        self.limits = Limits(
            max_session_bytes=settings.max_session_bytes,
            max_array_bytes=settings.max_array_bytes,
            max_batch_ops=settings.max_batch_ops,
            max_batch_steps=settings.max_batch_steps,
            max_program_steps=settings.max_program_steps,
            max_user_bytes=settings.max_user_bytes,
            max_session_arrays=settings.max_session_arrays,
        )
        self.folder: Path | None = settings.data_dir / "sessions" if settings.data_dir else None
        self._saved: dict[str, int] = {}  # session id -> version last written
        self._writing = threading.Lock()  # one snapshot round at a time (shutdown's waits for one under way)
        self._lock_fd: int | None = None  # (``open``)
        # owner -> the tokens of their latest opens -> (the session opened, when), oldest first
        self._opened: dict[str, OrderedDict[str, tuple[str, float]]] = {}

    def create(self, owner: str, seed: int | None = None, token: str | None = None) -> Session:
        """A new session of ``owner``'s; or, for an open given the ``token`` of one of theirs
        in the last ``REOPEN_S`` seconds, the session that one opened, if it is still open. A
        client whose reply was lost sends its open again: a second session would count against
        the user's sessions until its TTL (with one allowed, the retry was refused and the user
        locked out that long)."""
        self.expire()
        with self._lock:
            if token is not None:
                s = self._reopened(owner, token)
                if s is not None:
                    self._used[s.id] = time.monotonic()
                    return s
            n = len(self._owned.get(owner, ()))
            if n >= self.settings.max_sessions_per_user:
                raise QuotaExceeded(f"user {owner!r} already has {n} sessions, the limit; delete one first")
            s = Session(secrets.token_urlsafe(12), owner=owner, seed=seed, limits=self.limits)
            self._add(s)
            if token is not None:
                opened = self._opened.setdefault(owner, OrderedDict())
                opened.pop(token, None)  # (its session gone: the token names the new one, at the end)
                opened[token] = (s.id, time.monotonic())
                while len(opened) > self.REOPEN_TOKENS:
                    opened.popitem(last=False)
            return s

    def _reopened(self, owner: str, token: str) -> Session | None:
        """The session ``owner`` opened with ``token`` within ``REOPEN_S``, if still open (under
        ``_lock``); tokens past that time are dropped."""
        opened = self._opened.get(owner)
        if opened is None:
            return None
        cutoff = time.monotonic() - self.REOPEN_S
        while opened and next(iter(opened.values()))[1] < cutoff:
            opened.popitem(last=False)
        if not opened:
            del self._opened[owner]
            return None
        sid = opened.get(token, ("", 0.0))[0]
        return self._sessions.get(sid)

    def _add(self, s: Session) -> None:
        """Hold a session, hooked to the store: metrics, its idle time, and its owner's byte quota."""
        sid, observe = s.id, self.on_batch

        def batch_ended(done: int, kind: str | None, called: int) -> None:
            # used as a batch ends too, not only as it starts: one that ran past the TTL has not
            # left its session idle all that time (a retry of it would find the session gone)
            with self._lock:  # (not for a session deleted while its batch ran)
                if sid in self._sessions:
                    self._used[sid] = time.monotonic()
            if observe is not None:
                observe(done, kind, called)

        s.on_batch = batch_ended
        mine = self._owned.setdefault(s.owner, {})
        # (the hooks name the session by its id, not by itself: a session that held itself through
        # them would outlive its deletion until a full collection, its arrays with it)
        s.user_bytes = lambda: sum(o.held_bytes() for o in list(mine.values()) if o.id != sid)
        s.user_reply_bytes = lambda: sum(o.reply_bytes for o in list(mine.values()) if o.id != sid)
        mine[s.id] = s
        self._sessions[s.id] = s
        self._used[s.id] = time.monotonic()

    def get(self, sid: str, owner: str) -> Session:
        s = self._sessions.get(sid)
        if s is None or s.owner != owner:
            raise SessionNotFound(f"no session {sid!r}")
        self._used[sid] = time.monotonic()
        return s

    def delete(self, sid: str, owner: str) -> None:
        self.get(sid, owner)
        self._forget(sid)

    def _forget(self, sid: str) -> None:
        with self._lock:
            s = self._sessions.pop(sid, None)
            if s is not None:
                self._owned.get(s.owner, {}).pop(sid, None)
            self._used.pop(sid, None)
            self._saved.pop(sid, None)
        if self.folder is not None:
            (self.folder / f"{sid}.npz").unlink(missing_ok=True)

    def list(self, owner: str) -> list[Session]:
        return list(self._owned.get(owner, {}).values())

    def expire(self) -> int:
        """Drop sessions idle for longer than the TTL; return how many."""
        cutoff = time.monotonic() - self.settings.session_ttl_s
        with self._lock:  # (a session running a batch is in use, however long the batch)
            old = [sid for sid, t in self._used.items() if t < cutoff and not self._busy(sid)]
        for sid in old:
            self._forget(sid)
        return len(old)

    def _busy(self, sid: str) -> bool:
        s = self._sessions.get(sid)
        return s is not None and s.lock.locked()

    # -- snapshots -----------------------------------------------------------

    def snapshot(self, wait_s: float = 1.0, busy_wait_s: float = 0.0) -> int:
        """Write every session changed since its last snapshot; return how many. A session
        busy for ``wait_s`` seconds (a long batch, a reply to a slow client) is passed over
        until the others are written, then waited for, all of them within ``busy_wait_s``
        seconds more (the round's interval: a session that runs batch after batch is free
        between them, and would otherwise be caught free only by chance); one still busy, or
        whose write fails (a full disk), waits for the next round, the others written all the
        same. ``busy_wait_s`` below 0 (at shutdown, which has no next round): each is waited
        for as long as it is busy."""
        if self.folder is None:
            return 0
        with self._writing:
            written = self._snapshot(self.folder, wait_s, busy_wait_s)
            self._save_used(self.folder)
            return written

    USED = "last-used.json"
    """When each session was last used (wall-clock seconds), written with each snapshot round:
    a restart keeps the sessions' idle time (their TTL counted from a start, a server restarted
    more often than the TTL would expire none)."""

    def _save_used(self, folder: Path) -> None:
        now_wall, now = time.time(), time.monotonic()
        with self._lock:
            used = {sid: now_wall - (now - t) for sid, t in self._used.items()}
        if not used and not folder.is_dir():
            return  # (nothing saved yet, nothing to say)
        try:
            snapshot.write_atomically(folder / self.USED, lambda f: f.write(json.dumps(used).encode()))
        except OSError as e:  # (a full disk: the sessions' files matter more; the next round retries)
            log.error("could not write %s: %s", self.USED, e)

    def _load_used(self, folder: Path) -> dict[str, float]:
        try:
            used = json.loads((folder / self.USED).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(used, dict):
            return {}
        return {k: v for k, v in used.items() if isinstance(v, float) and math.isfinite(v)}

    def _snapshot(self, folder: Path, wait_s: float, busy_wait_s: float) -> int:
        written = 0
        busy: list[Session] = []
        for s in list(self._sessions.values()):
            if self._saved.get(s.id) != s.version:
                written += self._write(folder, s, wait_s, busy)
        if busy_wait_s < 0:  # (at shutdown: as long as each is busy; the process goes once they are written)
            for s in busy:
                log.warning("session %s is running a batch: it is written when the batch ends", s.id)
                written += self._write(folder, s, -1, [])
        elif busy_wait_s > wait_s:  # (the second pass waits that long in all, not per session)
            deadline = time.monotonic() + busy_wait_s
            for s in busy:
                written += self._write(folder, s, max(0.0, deadline - time.monotonic()), [])
        return written

    def _write(self, folder: Path, s: Session, wait_s: float, busy: list[Session]) -> int:
        """Write ``s``'s snapshot: 1 if written; 0 if not (``s`` added to ``busy`` if it was).
        The version recorded is the one the file holds, read as the session is copied: a batch
        queued for the session may take it before the copy does (``kept``)."""
        try:
            version = snapshot.save(s, folder / f"{s.id}.npz", wait_s)
        except Exception as e:  # a full disk; no memory for the session's copy; anything else
            log.error("snapshot of session %s failed: %s: %s", s.id, type(e).__name__, e)
            if self.on_snapshot_failure is not None:
                self.on_snapshot_failure()
            return 0
        if version is None:
            busy.append(s)
            return 0
        with self._lock:
            gone = s.id not in self._sessions
        if gone:  # deleted or expired while it was written: its file goes too
            (folder / f"{s.id}.npz").unlink(missing_ok=True)
            return 0
        self._saved[s.id] = version
        return 1

    def kept(self, s: Session) -> bool:
        """Whether what session ``s`` holds now is what its last snapshot holds (always, with
        no data directory: nothing is kept)."""
        return self.folder is None or self._saved.get(s.id) == s.version

    def open(self) -> None:
        """Take the data directory (``lock_data_dir``), before ``restore``; ``close`` lets it go."""
        if self.folder is not None and self._lock_fd is None:
            self._lock_fd = lock_data_dir(self.folder)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def restore(self) -> int:
        """Load the sessions of the data directory (at start); return how many."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        for path in self.folder.glob(".tmp-*"):  # a write a crash cut short: never a session's state
            log.warning("removing %s, a snapshot whose write did not finish", path)
            path.unlink(missing_ok=True)
        used = self._load_used(self.folder)
        now_wall, now = time.time(), time.monotonic()
        for path in sorted(self.folder.glob("[!.]*.npz")):
            try:
                s = snapshot.load(path, self.limits)
            except MXNetError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            except Exception:  # a file ours no longer reads: the others are served all the same
                log.exception("skipping %s: it does not load", path)
                continue
            if path.name != f"{s.id}.npz":  # a copy (a backup kept beside it), or a made-up id
                log.warning("skipping %s: it holds session %r, whose snapshot is named %s.npz", path, s.id, s.id)
                continue
            over = snapshot.over_limits(s)
            if over:
                log.warning("session %s is restored over limits lowered since it was saved: %s", s.id, "; ".join(over))
            self._add(s)
            self._saved[s.id] = s.version
            # idle since it was last used, as written with the last snapshot round (else since
            # its file was written: its last change), not since this start
            last = used.get(s.id, path.stat().st_mtime)
            self._used[s.id] = now - max(0.0, now_wall - last)
        self.expire()  # (those idle past their TTL while the server was down: gone before it serves)
        return len(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def total_bytes(self) -> int:
        return sum(s.nbytes for s in list(self._sessions.values()))
