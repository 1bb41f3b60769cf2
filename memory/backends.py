"""Where the principle memory's Chroma collections live: a local folder or a ``chroma run`` server.

Both backends hand out a Chroma client inside ``session(write=...)``; the store never holds one
outside a session.

- ``LocalBackend``: a folder (``PersistentClient``). Chroma's local client is not safe for several
  processes, and one that stays open keeps a stale vector index after another process writes. So
  every session takes an inter-process file lock next to the store, and the client is reused only
  while no other process has written since it was opened: every write session first stamps a fresh
  *generation token* into a file beside the lock, and a session that finds a token other than the
  one its client saw reopens the client. Reads in a quiet memory then cost a lock and a query, not
  the ~100 ms of opening the store and loading its index again. One client per folder and process,
  shared by every store object on that folder (Chroma itself shares one system per path).
- ``HttpBackend``: a shared ``chroma run`` server; the server serialises writes, one client is kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from archlore.memory.errors import MemoryCorrupt, MemoryStoreError, MemoryUnavailable

log = logging.getLogger(__name__)

LOCK_FILE = "archlore-memory.lock"
GENERATION_FILE = "archlore-memory.generation"


class Backend(Protocol):
    location: str

    def session(self, *, write: bool = False) -> Any: ...  # a context manager yielding a client

    def stamp(self) -> None: ...  # inside a session: it wrote after all

    def generation(self) -> str | None: ...  # inside a session: what was last written, if known

    def close(self) -> None: ...


def open_backend(location: str | Path, *, lock_timeout: float = 120.0) -> LocalBackend | HttpBackend:
    """A backend for a folder path or an ``http(s)://host:port`` URL."""
    if isinstance(location, str) and location.startswith(("http://", "https://")):
        return HttpBackend(location, lock_timeout)
    return LocalBackend(Path(location), lock_timeout)


def _settings() -> Any:
    """Fresh settings per client: the Chroma clients write host, port and path into them."""
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def chroma_errors() -> tuple[type[BaseException], ...]:
    from chromadb.errors import ChromaError

    return (ChromaError,)


@dataclass
class _Shared:
    """The one client a process keeps on a folder, and the generation it last saw."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    client: Any = None
    token: str | None = None
    pid: int = 0
    users: int = 0

    def drop(self) -> None:
        client, self.client, self.token = self.client, None, None
        if client is not None and self.pid == os.getpid():  # a forked child never touches the parent's
            try:
                client.close()
            except Exception:  # closing is best effort; a new client is opened next time
                log.debug("closing a Chroma client failed", exc_info=True)


_shared: dict[str, _Shared] = {}
_shared_guard = threading.Lock()


class LocalBackend:
    """A Chroma folder under an inter-process file lock, its client reused while nobody else writes."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        from filelock import FileLock

        self.path = path.expanduser().resolve()
        self.location = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise MemoryUnavailable(f"the memory path {self.path} is a file, not a folder; pass --memory with a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryUnavailable(
                f"cannot create the memory folder {self.path}: {exc}; pass --memory with a writable path"
            ) from exc
        others = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK_FILE, GENERATION_FILE))
        if others and "chroma.sqlite3" not in others:
            raise MemoryCorrupt(
                f"the folder {self.path} holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) and no memory; point --memory at an empty or new folder"
            )
        self.lock_timeout = lock_timeout
        self._file_lock = FileLock(str(self.path / LOCK_FILE), timeout=lock_timeout)
        self._token_file = self.path / GENERATION_FILE
        with _shared_guard:
            self._shared = _shared.setdefault(self.location, _Shared())
            self._shared.users += 1
        self._closed = False

    def _read_token(self) -> str:
        try:
            return self._token_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError):
            return "unreadable"  # never matches a client's token: reopen

    def _write_token(self) -> str:
        token = uuid.uuid4().hex
        tmp = self._token_file.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(token, encoding="ascii")
            os.replace(tmp, self._token_file)
        except OSError as exc:
            raise MemoryUnavailable(
                f"cannot write to the memory folder {self.location}: {exc.strerror or exc}; "
                "pass --memory with a writable path"
            ) from exc
        return token

    def _open_client(self) -> Any:
        import chromadb

        try:
            return chromadb.PersistentClient(path=self.location, settings=_settings())
        except OSError as exc:
            raise MemoryUnavailable(f"cannot open the memory at {self.location}: {exc}") from exc
        except Exception as exc:  # garbage or damaged files surface as many different errors
            raise MemoryCorrupt(
                f"the memory folder {self.location} is not a readable Chroma store "
                f"({exc.__class__.__name__}: {str(exc)[:200]}); point --memory at an empty or new folder, "
                "or restore it from an `archlore memory export` file"
            ) from exc

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Any]:
        from filelock import Timeout

        if self._closed:
            raise MemoryStoreError(f"the memory at {self.location} was closed; open it again with open_store")
        shared = self._shared
        with shared.lock:  # threads of one process serialise before the file lock
            try:
                self._file_lock.acquire()
            except Timeout:
                raise MemoryUnavailable(
                    f"the memory at {self.location} stayed locked by another process for "
                    f"{self.lock_timeout:.0f} s; wait for that process to finish and retry"
                ) from None
            try:
                token = self._read_token()
                if shared.client is None or shared.token != token or shared.pid != os.getpid():
                    shared.drop()
                    shared.client, shared.pid = self._open_client(), os.getpid()
                if write:  # stamped before writing: a writer killed halfway still invalidates readers
                    token = self._write_token()
                shared.token = token
                try:
                    yield shared.client
                except chroma_errors() as exc:
                    shared.drop()
                    raise MemoryStoreError(
                        f"the memory at {self.location} failed: {exc}; if this persists, move the folder "
                        "away and restore the memory from an `archlore memory export` file"
                    ) from exc
                except BaseException:
                    shared.drop()  # whatever the client holds may be half-done
                    raise
            finally:
                self._file_lock.release()

    def generation(self) -> str | None:
        """Inside a session: a token that changes whenever anyone writes to this folder, so what was
        read under the same token is still what the folder holds."""
        return self._shared.token

    def stamp(self) -> None:
        """Inside a session that turned out to write: make other processes reopen their clients."""
        with self._shared.lock:
            self._shared.token = self._write_token()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._shared.lock:
            self._shared.users -= 1
            if self._shared.users <= 0:
                self._shared.drop()


SERVER_LOCK_COLLECTION = "archlore_write_lock"
SERVER_LOCK_LEASE = 120.0  # seconds: far longer than one write session (a few seconds)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class HttpBackend:
    """A shared ``chroma run`` server; it serialises writes itself, so one client is kept."""

    def __init__(self, url: str, lock_timeout: float = 120.0) -> None:
        import chromadb

        parsed = urlparse(url)
        if not parsed.hostname:
            raise MemoryStoreError(f"cannot read a host from {url!r}; use http://HOST:PORT")
        ssl = parsed.scheme == "https"
        try:
            port = parsed.port or (443 if ssl else 8000)
        except ValueError:
            raise MemoryStoreError(f"cannot read a port from {url!r}; use http://HOST:PORT") from None
        self.location = f"{parsed.scheme}://{parsed.hostname}:{port}"
        self._lock = threading.RLock()
        self.lock_timeout = lock_timeout
        try:
            self._client = chromadb.HttpClient(host=parsed.hostname, port=port, ssl=ssl, settings=_settings())
            self._client.heartbeat()
        except Exception as exc:  # connection refused, DNS, TLS... all mean "not reachable"
            raise MemoryUnavailable(
                f"cannot reach the Chroma server at {self.location} ({exc.__class__.__name__}: {exc}); "
                f"start one with `chroma run --path DIR --port {port}` or fix --memory"
            ) from exc

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Any]:
        import httpx

        with self._lock:
            try:
                with self._server_lock() if write else _nothing():
                    yield self._client
            except httpx.HTTPError as exc:
                raise MemoryUnavailable(f"lost the Chroma server at {self.location}: {exc}") from exc
            except chroma_errors() as exc:
                raise MemoryStoreError(f"the Chroma server at {self.location} failed: {exc}") from exc

    @contextmanager
    def _server_lock(self) -> Iterator[None]:
        """One writer at a time across every client of the server.

        A write session reads principles, merges a run's contribution and writes them back; two
        clients doing that at once would each overwrite the other's merge (a lost write, seen
        with two writers). The server serialises single requests only, so the lock is a record in
        a collection of its own: Chroma ignores an `add` of an id that exists, so of several
        clients adding the lock record the first wins, and each reads back whose it is. The
        record carries an expiry, so a writer killed while holding it delays others by at most
        `SERVER_LOCK_LEASE` seconds; a stale record is deleted only if it is still that owner's.
        """
        col = self._client.get_or_create_collection(SERVER_LOCK_COLLECTION, embedding_function=None)
        me = f"{os.getpid()}-{uuid.uuid4().hex}"
        deadline = time.time() + self.lock_timeout
        delay = 0.02
        while True:
            col.add(ids=["writer"], embeddings=[[0.0]], metadatas=[{"owner": me, "expires": time.time() + SERVER_LOCK_LEASE}])
            got = col.get(ids=["writer"], include=["metadatas"])
            meta = got["metadatas"][0] if got["ids"] else None
            if meta is not None and meta.get("owner") == me:
                break
            if meta is not None and float(meta.get("expires", 0)) < time.time():
                log.warning("the Chroma server's write lock of %s expired; taking it over", meta.get("owner"))
                col.delete(ids=["writer"], where={"owner": meta.get("owner")})
                continue
            if time.time() > deadline:
                raise MemoryUnavailable(
                    f"another archlore process has been writing to the Chroma server at {self.location} for "
                    f"{self.lock_timeout:.0f} s; retry when it is done"
                )
            time.sleep(delay)
            delay = min(0.5, delay * 2)
        try:
            yield
        finally:
            try:
                col.delete(ids=["writer"], where={"owner": me})
            except Exception as exc:  # noqa: BLE001 - the lease expires anyway
                log.warning("could not release the Chroma server's write lock: %s", exc)

    def generation(self) -> str | None:
        return None  # other clients write unseen: nothing read earlier may be reused

    def stamp(self) -> None:
        pass  # the server serves every client the same index

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing is best effort
            pass
