"""The chat coordinator: slash commands, the approval interrupt, sessions that survive a kill, the
terminal driven in a pseudo-terminal, and the tool-calling path against a scripted
OpenAI-compatible server that checks the prompts it receives (and streams its answers)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import DATA, needs_data
from .scripted import expect

pytestmark = needs_data

ARCHLORE = str(Path(sys.executable).with_name("archlore"))


def _chat(tmp_path: Path, **kw: Any):
    from archlore.agents.chat import ChatSession

    return ChatSession(root=tmp_path / "runs", data=str(DATA), **{"memory": "off", **kw})


def _evals(run_dir: Path, run_id: str) -> list[str]:
    with sqlite3.connect(run_dir / "ledger.db") as db:
        return [a for (a,) in db.execute("SELECT arch FROM evaluations WHERE run_id = ? ORDER BY seq", (run_id,))]


# ---- the approval node, at the runner's level ----


def test_approval_interrupt_resumed_with_approve_and_edit(tmp_path: Path) -> None:
    from archlore.agents.context import RunSettings
    from archlore.agents.runner import run_persistent

    root = tmp_path / "runs"
    rec, _ = run_persistent(RunSettings(run_id="a", budget=12, memory="off", data=str(DATA), approve=True), root=root)
    assert rec["used"] == 0 and rec["waiting"]["kind"] == "approve_filter" and rec["waiting"]["round"] == 0
    planned = rec["waiting"]["allowed"]
    # resuming without an answer asks again, spending nothing
    rec, _ = run_persistent(RunSettings(run_id="a", source=None), root=root, resume=True)
    assert rec["used"] == 0 and rec["waiting"]["round"] == 0
    edge = list(planned)[-1]
    rec, _ = run_persistent(RunSettings(run_id="a", source=None), root=root, resume=True,
                            answer={"action": "edit", "filter": {edge: ["skip_connect"]}})
    assert rec["waiting"]["round"] == 1 and rec["used"] == 5
    person = [f for f in rec["filters"] if f["how"] == "person"]
    assert person and person[0]["allowed"][edge] == ["skip_connect"]
    assert all(e["arch"].split("|")[-2].startswith("skip_connect") for e in rec["evaluations"][:5])  # edge3<-2 is the last op
    rec, _ = run_persistent(RunSettings(run_id="a", source=None), root=root, resume=True, answer={"action": "approve"})
    assert {e["event"] for e in rec["events"]} >= {"edited", "approved"}
    # an edit naming an unknown choice keeps the planner's filter and is recorded
    rec, _ = run_persistent(RunSettings(run_id="a", source=None), root=root, resume=True,
                            answer={"action": "edit", "filter": {edge: ["conv_9x9"]}})
    assert any(e["event"] == "edit_rejected" for e in rec["events"])


def test_automated_runs_never_wait(tmp_path: Path) -> None:
    from archlore.agents.context import RunSettings
    from archlore.agents.runner import run_persistent

    rec, _ = run_persistent(RunSettings(run_id="auto", budget=12, memory="off", data=str(DATA)), root=tmp_path)
    assert rec["used"] == 12 and "waiting" not in rec
    assert not any(e.get("node") == "approve" for e in rec["events"])


# ---- slash commands with --llm none ----


def test_slash_commands(tmp_path: Path) -> None:
    chat = _chat(tmp_path)
    try:
        assert "/run" in chat.reply("/help") and "/compare" in chat.reply("/help")
        assert chat.reply("search cifar100 please").startswith("free text needs an LLM")
        assert chat.reply("/frobnicate").startswith("error: unknown command /frobnicate")
        assert chat.reply("/run budget=lots").startswith("error: /run: budget")
        assert chat.reply("/run target=nosuchtask").startswith("error:")
        assert chat.reply('/edit filter "edge3<-2=skip_connect"').startswith("error: nothing to edit now")
        assert chat.reply("/status").startswith("no runs in this session yet")
        started = chat.reply("/run target=cifar100 budget=12")
        assert started.startswith("started run ")
        run_id = started.split()[2].rstrip(":")
        chat.runs.wait(60)
        assert "waits for approval" in chat.reply("/status")
        shown = chat.reply("/filter")
        assert "waiting for you" in shown and "edge3<-2" in shown
        assert chat.reply("/principles").startswith(f"principles of {run_id}")
        assert "evidence given:" in chat.reply("/principles 2")
        assert chat.reply("/principles 999").startswith(f"run {run_id} has")
        assert chat.reply('/edit filter "edge3<-2=conv_9x9"').startswith("error:")  # unknown choice, one line
        assert chat.reply("/edit filter nonsense").startswith("error:")
        assert chat.reply('/edit filter "edge3<-2=skip_connect"').startswith("filter edited")
        chat.runs.wait(60)
        assert chat.runs.waiting()["round"] == 1
        assert chat.reply("/edit principle 1 confidence").startswith("error:")
        assert chat.reply("/edit principle 1 drop").startswith("principle 1 dropped")
        chat.runs.wait(60)
        assert chat.reply("/approve off").startswith("approval off")
        chat.runs.wait(60)
        status = chat.reply("/status")
        assert f"{run_id}: done, 12/12 evaluations" in status
        compared = chat.reply("/compare")
        assert "random (5 seeds" in compared and "rea (5 seeds" in compared
        plotted = chat.reply("/plot curve")
        assert plotted.startswith("figure:") and Path(plotted.split()[-1]).stat().st_size > 5000
        assert chat.reply("/plot pie").startswith("error:")
        assert chat.reply("/memory image classification").startswith("error: this session runs with --memory off")
    finally:
        chat.close()
    # a run started from chat is an ordinary run: `archlore show` reads it
    out = subprocess.run([ARCHLORE, "show", run_id, "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "12/12 evaluations" in out.stdout
    rec = json.loads((tmp_path / "runs" / run_id / "record.json").read_text())
    assert [e["event"] for e in rec["events"] if e.get("node") == "approve"][:2] == ["edited", "edited"]


def test_stop_keeps_every_evaluation_and_continue_finishes(tmp_path: Path) -> None:
    chat = _chat(tmp_path, approve=False)
    seen: list[int] = []

    def stop_after_three(ev: dict) -> None:  # called from the run's thread
        if ev.get("kind") == "eval":
            seen.append(ev["used"])
            if ev["used"] == 3:
                chat.runs.request_stop()

    chat.listen(stop_after_three)
    try:
        run_id = chat.reply("/run target=cifar100 budget=40").split()[2].rstrip(":")
        chat.runs.wait(60)
        assert chat.runs.progress(run_id)["status"] == "paused"
        assert len(_evals(tmp_path / "runs" / run_id, run_id)) == 3
        assert "paused, 3/40" in chat.reply("/status")
        chat.listen(lambda ev: None)
        chat._listeners.remove(stop_after_three)
        assert chat.reply("/continue").startswith(f"continuing run {run_id}")
        chat.runs.wait(120)
        archs = _evals(tmp_path / "runs" / run_id, run_id)
        assert len(archs) == 40 and len(set(archs)) == 40  # nothing lost, nothing evaluated twice
    finally:
        chat.close()


def test_session_persists_and_resumes_an_unfinished_run(tmp_path: Path) -> None:
    from archlore.agents.chat import ChatSession
    from archlore.agents.sessions import SessionStore

    chat = _chat(tmp_path, approve=False)
    sid = chat.id
    halt = threading.Event()

    def halt_after_two(ev: dict) -> None:
        if ev.get("kind") == "eval" and ev["used"] == 2:
            halt.set()
            chat.runs.request_stop()
            chat.runs._exiting = True  # as when the chat process goes away mid-search

    chat.listen(halt_after_two)
    run_id = chat.reply("/run target=cifar100 budget=15").split()[2].rstrip(":")
    chat.runs.wait(60)
    assert halt.is_set()
    chat.close()
    with SessionStore(tmp_path / "runs") as store:
        assert [(r.run_id, r.status) for r in store.runs(sid)] == [(run_id, "running")]
    again = ChatSession(session_id=sid, root=tmp_path / "runs", data=str(DATA), create=False)
    try:
        assert again.defaults["memory"] == "off"  # the session's defaults come back with it
        assert [t for r, t, _ in again.history() if r == "user"] == ["/run target=cifar100 budget=15"]
        notes = again.open()
        assert notes == [f"resuming run {run_id}, left unfinished when the chat stopped"]
        again.runs.wait(60)
        assert f"{run_id}: done, 15/15" in again.reply("/status")
    finally:
        again.close()
    with pytest.raises(Exception, match="no chat session"):
        ChatSession(session_id="nope", root=tmp_path / "runs", create=False)
    out = subprocess.run([ARCHLORE, "sessions", "--runs-dir", str(tmp_path / "runs"), "--json"], capture_output=True, text=True, timeout=60, check=False)
    listed = json.loads(out.stdout)
    assert listed[0]["id"] == sid and listed[0]["runs"] == [{"run_id": run_id, "status": "done"}]


# ---- the terminal, as a person uses it ----


def _spawn(tmp_path: Path, *args: str, ready: bool = True):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "COLUMNS": "160", "LINES": "50",
           "ARCHLORE_DATA": str(DATA)}
    child = pexpect.spawn(ARCHLORE, ["chat", "--runs-dir", str(tmp_path / "runs"), "--memory", "off", *args],
                          env=env, encoding="utf-8", timeout=60, dimensions=(50, 160))
    if ready:
        child.expect("archlore>")
    return child


def _say(child, text: str, until: str) -> None:
    child.sendline(text)
    child.expect(until)


@pytest.mark.slow  # a pty and two archlore processes: ~20 s on a busy 2-core machine
def test_terminal_approve_edit_kill_resume(tmp_path: Path) -> None:
    child = _spawn(tmp_path)
    (sid,) = SessionIds(tmp_path)
    _say(child, "/help", "/approve")
    _say(child, "what now?", "free text needs an LLM")
    _say(child, "/nope", "unknown command")
    _say(child, "/run target=cifar100 budget=12", "waiting")
    _say(child, "/principles", "principles of")
    _say(child, "/edit principle 1 drop", "principle 1 dropped")
    child.expect("round-1 filter")
    child.kill(signal.SIGKILL)  # killed while its run waits for approval
    child.wait()
    # what a reopened session prints may reach the screen before or after the first prompt
    # (prompt_toolkit's patched stdout writes from its own thread): expect it in order, not before
    child = _spawn(tmp_path, "--session", sid, ready=False)
    child.expect("/edit principle 1 drop")  # the conversation came back
    child.expect("principle 1 dropped")
    child.expect("round-1 filter")  # and so did the run's question
    child.expect("archlore>")
    _say(child, "/approve off", "approval off")
    child.expect("finished")
    _say(child, "/status", "done, 12/12 evaluations")
    child.expect("archlore>")  # a Ctrl-D typed before the prompt is back would meet a cooked terminal
    child.sendcontrol("d")
    child.expect(pexpect_eof())
    out = subprocess.run([ARCHLORE, "sessions", "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60, check=False)
    assert sid[:12] in out.stdout


def SessionIds(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "runs" / ".sessions.db") as db:
        return [i for (i,) in db.execute("SELECT id FROM chat_sessions")]


def pexpect_eof():
    import pexpect

    return pexpect.EOF


# ---- the tool-calling path against a scripted, streaming OpenAI-compatible server ----


class StreamingFake:
    """An OpenAI-compatible server on 127.0.0.1 that answers from a script, streaming (SSE) when
    asked to; each item is (tool call or None, text, check). Failed checks are raised at exit."""

    def __init__(self, script: list[tuple]) -> None:
        self.script, self.requests, self.failures = list(script), [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                call, text, check = outer.script.pop(0) if outer.script else (None, "script exhausted", None)
                if check:
                    try:
                        check(body)
                    except AssertionError as exc:
                        outer.failures.append(f"request {len(outer.requests)}: {exc}")
                delta: dict[str, Any] = {"role": "assistant"}
                if call:
                    delta["tool_calls"] = [{"index": 0, "id": f"call_{len(outer.requests)}", "type": "function",
                                            "function": {"name": call[0], "arguments": json.dumps(call[1])}}]
                head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
                if not body.get("stream"):
                    msg = {"role": "assistant", "content": text or None, **({"tool_calls": [dict(delta["tool_calls"][0])]} if call else {})}
                    if call:
                        msg["tool_calls"][0].pop("index")
                    data = json.dumps({**head, "object": "chat.completion", "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if call else "stop"}],
                                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                chunks = [{**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}]
                for word in (text or "").split(" "):
                    if word:
                        chunks.append({**head, "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]})
                chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if call else "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for c in chunks:
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def llm(self) -> str:
        return f"openai:fake@http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        assert not self.failures, "the fake server's checks failed:\n" + "\n".join(self.failures)


def _script() -> list[tuple]:
    return [
        (("start_run", {"target": "cifar100", "budget": 12, "approve": False}), "",
         expect("archlore's coordinator", "search cifar100 with 12 evaluations", "no runs in this session yet")),
        (None, "Started a CIFAR-100 search with 12 evaluations.", expect("started run nb201-cifar100", last=True)),
        (("status", {}), "", expect("how is it going", last=True)),
        (None, "It finished: best validation 73.49.", expect("done, 12/12 evaluations", last=True)),
        (("compare", {"run_id": 7}), "", None),  # a malformed call: the error goes back to the model
        (None, "Sorry, let me fix that.", expect("error: run_id", last=True)),
    ]


def test_tool_calling_coordinator_streams_and_checks_prompts(tmp_path: Path) -> None:
    fake = StreamingFake(_script())
    chat = _chat(tmp_path, llm=f"coordinator={fake.llm}")  # the runs it starts use none (statistics)
    try:
        events = list(chat.send("search cifar100 with 12 evaluations"))
        assert [e["names"] for e in events if e["type"] == "calls"] == [["start_run"]]
        tokens = [e["text"] for e in events if e["type"] == "token"]
        assert len(tokens) > 3 and "".join(tokens).strip() == "Started a CIFAR-100 search with 12 evaluations."
        chat.runs.wait(60)
        assert "best validation 73.49" in chat.reply("how is it going?")
        assert "let me fix that" in chat.reply("compare it")
        assert fake.requests[0]["stream"] is True and fake.requests[0]["tools"]
    finally:
        chat.close()
        fake.close()


@pytest.mark.slow  # a pty and two archlore processes: ~20 s on a busy 2-core machine
def test_terminal_with_scripted_llm(tmp_path: Path) -> None:
    fake = StreamingFake(_script()[:2])
    try:
        child = _spawn(tmp_path, "--llm", f"coordinator={fake.llm}")
        _say(child, "search cifar100 with 12 evaluations", "start_run")
        child.expect("Started a CIFAR-100 search")
        child.expect("finished")
        child.expect("archlore>")
        child.sendcontrol("d")
        child.expect(pexpect_eof())
    finally:
        fake.close()


def test_memory_from_chat_with_provenance(tmp_path: Path) -> None:
    # this session's runs and queries use a fresh store
    chat = _chat(tmp_path, approve=False, memory=str(tmp_path / "memory"), embedding="hash")
    try:
        assert chat.reply("/memory anything").startswith("the memory has no principles")
        run_id = chat.reply("/run target=cifar100 budget=10").split()[2].rstrip(":")
        chat.runs.wait(60)
        assert f"{run_id}: done" in chat.reply("/status")
        found = chat.reply("/memory nor_conv_3x3 image classification space=nb201")
        assert "[nb201/cifar100]" in found and "from data: cifar10, cifar100" in found and run_id in found
        assert chat.reply("/memory").startswith("error: give something to search for")
    finally:
        chat.close()


@pytest.mark.slow  # a pty, a long search and two archlore processes: ~30 s on a busy 2-core machine
def test_terminal_ctrl_c_and_kill_mid_search(tmp_path: Path) -> None:
    child = _spawn(tmp_path)
    (sid,) = SessionIds(tmp_path)
    _say(child, "/run target=cifar100 budget=1000 approve=off", "planner: filter")
    child.sendintr()  # Ctrl-C: stop the search after the evaluation in flight
    child.expect(r"paused\S* after (\d+) evaluations")  # \S*: the colour code after "paused"
    _say(child, "/status", "paused")
    _say(child, "/continue", "continuing run")
    child.expect("analyst")  # searching again
    child.kill(signal.SIGKILL)  # killed mid-search
    child.wait()
    child = _spawn(tmp_path, "--session", sid, ready=False)
    child.expect("resuming run .* left unfinished")
    child.expect("archlore>")
    child.sendintr()
    child.expect(r"paused\S* after (\d+) evaluations")  # \S*: the colour code after "paused"
    used = int(child.match.group(1))
    child.expect("archlore>")  # a Ctrl-D typed before the prompt is back would meet a cooked terminal
    child.sendcontrol("d")
    child.expect(pexpect_eof())
    (run_id,) = [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    archs = _evals(tmp_path / "runs" / run_id, run_id)
    assert 0 < len(archs) == used < 1000 and len(set(archs)) == len(archs)  # none lost, none twice
