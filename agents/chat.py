"""The chat coordinator: a LangGraph tool-calling agent over the same runner, graph, tools and
memory as automated runs, and the slash commands that do the same without an LLM.

    START -> (command | agent) ; agent -> (tools -> agent | END) ; command -> END

A message that starts with `/` is a slash command (agents.chat_tools), run by the `command` node
without any LLM; any other message goes to the `agent` node, which calls the coordinator's LLM
with the actions of agents.chat_tools as tools. With `--llm none` free text gets a one-line hint.
The conversation is the graph's state, checkpointed per session (agents.sessions), so a killed
chat resumes where it was. Searches run in a background thread (`RunManager`) as ordinary runs
(`runner.run_persistent`): the conversation stays responsive while evaluations continue, a stop
request ends the search after the evaluation in flight (nothing finished is lost), and a run's
approval step (nodes.approve) is answered by resuming the run with the person's answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from archlore.tools.errors import ArchloreError, ConfigError
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

from . import chat_tools
from .sessions import SessionStore

log = logging.getLogger(__name__)

HINT = ("free text needs an LLM (start the chat with --llm openai:MODEL or --llm local); "
        "with --llm none every action is a slash command: /help lists them")
MAX_TOOL_ROUNDS = 4
WINDOW = 24  # messages of the conversation the LLM sees

SYSTEM = """You are archlore's coordinator. A person steers neural-architecture searches through you.
archlore learns design principles from a source task's best architectures, turns them into a
filter (allowed choices per position of the search space), searches inside it on a target task,
and refines the principles as results come in. Use the tools to act: start_run, continue_run,
pause_run, status, show_principles, explain_principle, show_filter, approve_filter, edit_filter,
edit_principle, query_memory, compare, plot. Never invent numbers: call a tool and quote it.
Answer in a few short sentences. Task names: cifar10, cifar100, imagenet16-120 (space nb201).

Session now:
{status}"""


class RunStopped(Exception):
    """Raised from the progress callback after an evaluation when a stop was asked for."""

    interrupts_run = True  # a stored run is marked interrupted (resumable), not failed


class RunManager:
    """The session's searches: one at a time, each in a background thread, as ordinary runs
    (in run folders under `root`, or in the shared `storage` when the session has one)."""

    def __init__(self, root: Path, store: SessionStore, session_id: str, defaults: dict[str, Any],
                 notify: Callable[[dict], None], storage: str | None = None) -> None:
        self.root, self.store, self.session_id, self.defaults, self.notify = root, store, session_id, defaults, notify
        self.storage = storage
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._progress: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, Any] | None = None
        self.active: str | None = None

    # -- queries --

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def waiting(self) -> dict[str, Any] | None:
        return None if self.busy() else self._waiting

    def progress(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._progress.get(run_id, {}))

    def current(self, run_id: str | None = None) -> str:
        if run_id:
            return run_id
        if self.active:
            return self.active
        runs = self.store.runs(self.session_id)
        if not runs:
            raise ConfigError("no run in this session yet: /run target=cifar100 budget=20 starts one")
        return runs[-1].run_id

    # -- actions --

    def start(self, **options: Any) -> str:
        from .context import RunSettings
        from .runner import new_run_id, preflight

        self._refuse_if_busy()
        d = self.defaults
        settings = RunSettings(
            run_id=new_run_id({"space": Path(options["space"]).stem, "target": options["target"], "seed": options["seed"]}),
            llm=d.get("llm") or "none", memory=d.get("memory"), data=d.get("data"),
            embedding=d.get("embedding") or "minilm", **options,
        )
        preflight(settings)  # a wrong task or budget is a one-line answer now, not a failed thread
        self.store.add_run(self.session_id, settings.run_id)
        self._waiting = None
        self._launch(settings, resume=False, answer=None)
        return settings.run_id

    def resume(self, run_id: str, answer: dict[str, Any] | None = None) -> None:
        from .context import RunSettings
        from .runner import check_run_id

        self._refuse_if_busy()
        if not self._exists(check_run_id(run_id)):
            raise ConfigError(f"run {run_id!r} has no files (it stopped before its first evaluation): /run starts it again")
        if answer is None and self._waiting and self._waiting.get("run_id") == run_id:
            raise ConfigError(f"run {run_id} waits for approval of its filter: /approve, or /edit filter ...")
        if run_id not in {r.run_id for r in self.store.runs(self.session_id)}:
            self.store.add_run(self.session_id, run_id)
        self._waiting = None
        self._launch(RunSettings(run_id=run_id, source=None), resume=True, answer=answer)

    def _exists(self, run_id: str) -> bool:
        if not self.storage:
            return (self.root / run_id / "settings.json").is_file()
        from archlore.tools.storage import RunStore

        with RunStore(self.storage) as store:
            return store.settings(run_id) is not None

    def _record(self, run_id: str) -> dict[str, Any] | None:
        """The run's last saved record (None when it has none yet)."""
        import json

        if self.storage:
            from archlore.tools.storage import RunStore

            with RunStore(self.storage) as store:
                return store.record(run_id)
        try:
            return json.loads((self.root / run_id / "record.json").read_text())
        except (OSError, ValueError):
            return None

    def request_stop(self) -> None:
        """Ask the running search to stop after the evaluation in flight (returns at once)."""
        self._stop.set()

    def stop(self, timeout: float = 60.0) -> str | None:
        """Stop the running search after the evaluation in flight; the run id, or None if none ran."""
        if not self.busy():
            return None
        run_id = self.active
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout)
        return run_id

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def reopen(self) -> list[str]:
        """After a restart: resume the run a killed process left running; recall a waiting one."""
        notes = []
        for r in self.store.runs(self.session_id):
            if r.status == "waiting":
                try:
                    rec = self._record(r.run_id)
                except ArchloreError:
                    rec = None
                if rec is not None:
                    self._waiting = rec.get("waiting") or None
                    self.active = r.run_id
                if self._waiting:
                    notes.append(f"run {r.run_id} waits for approval of its round-{self._waiting['round']} filter: /filter, /approve or /edit")
        unfinished = [r for r in self.store.runs(self.session_id) if r.status == "running"]
        if unfinished and not self.busy():
            run_id = unfinished[-1].run_id
            try:
                self.resume(run_id)
                notes.append(f"resuming run {run_id}, left unfinished when the chat stopped")
            except ArchloreError as exc:
                self.store.set_status(self.session_id, run_id, "failed", str(exc))
                notes.append(f"run {run_id} cannot be resumed: {exc}")
        return notes

    # -- the worker --

    def _refuse_if_busy(self) -> None:
        if self.busy():
            raise ConfigError(f"run {self.active} is searching: /pause it first (or wait for it)")

    def _launch(self, settings: Any, *, resume: bool, answer: dict[str, Any] | None) -> None:
        run_id = settings.run_id
        self._stop.clear()
        self.active = run_id
        with self._lock:
            self._progress[run_id] = {"run_id": run_id, "status": "running", "used": 0, "budget": settings.budget,
                                      "best": None, "round": 0, "filter": None, "principle": ""}
        self.store.set_status(self.session_id, run_id, "running")
        self._thread = threading.Thread(target=self._work, args=(settings, resume, answer), daemon=True,
                                        name=f"archlore-run-{run_id}")
        self._thread.start()

    def _on_event(self, run_id: str) -> Callable[[dict], None]:
        def on_event(ev: dict) -> None:
            kind = ev.get("kind")
            with self._lock:
                p = self._progress.setdefault(run_id, {"run_id": run_id})
                if kind == "eval":
                    p.update(used=ev["used"], budget=ev["budget"], best=ev["best"])
                elif kind == "filter":
                    p.update(filter=ev["size"])
                elif kind == "principles":
                    p["principle"] = ev.get("last", "")
                    if ev.get("mode") != "initial":
                        p["round"] = p.get("round", 0) + 1
            self.notify({**ev, "run_id": run_id})
            # only after an evaluation: it is in the ledger, and the search node re-runs idempotently
            if kind == "eval" and self._stop.is_set():
                raise RunStopped(run_id)

        return on_event

    def _work(self, settings: Any, resume: bool, answer: dict[str, Any] | None) -> None:
        from .runner import run_persistent
        from .stored import run_stored

        run_id = settings.run_id
        status, detail = "failed", ""
        try:
            if self.storage:
                record = run_stored(settings, storage=self.storage, resume=resume, on_event=self._on_event(run_id), answer=answer)
            else:
                record, _ = run_persistent(settings, root=self.root, resume=resume, on_event=self._on_event(run_id), answer=answer)
            if record.get("waiting"):
                status, self._waiting = "waiting", record["waiting"]
            else:
                status = "done"
            with self._lock:
                self._progress.setdefault(run_id, {}).update(used=record["used"], best=(record.get("best") or {}).get("valid"))
        except RunStopped:
            status = "paused"
        except ArchloreError as exc:
            detail = " ".join(str(exc).split())
        except Exception as exc:  # a bug must not end the chat: say it, keep the log
            log.exception("run %s failed", run_id)
            detail = f"internal error {type(exc).__name__}: {str(exc)[:200]}"
        if status == "paused" and self._exiting:
            status = "running"  # the chat is closing, not the person pausing: reopening resumes it
        self.store.set_status(self.session_id, run_id, status, detail)
        with self._lock:
            self._progress.setdefault(run_id, {})["status"] = status
        self.notify({"kind": "run_end", "run_id": run_id, "status": status, "detail": detail, "waiting": self._waiting})

    _exiting = False

    def close(self) -> None:
        self._exiting = True
        self.stop()


# ---- the coordinator graph ----


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _text(msg: Any) -> str:
    c = getattr(msg, "content", "")
    return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if isinstance(p, dict))


def route_input(state: ChatState) -> Literal["command", "agent"]:
    return "command" if _text(state["messages"][-1]).lstrip().startswith("/") else "agent"


def command(state: ChatState, runtime: Runtime[ChatSession]) -> dict:
    ans = chat_tools.slash(runtime.context, _text(state["messages"][-1]))
    meta = {"image": str(ans.image)} if ans.image else {}
    return {"messages": [AIMessage(ans.text, response_metadata=meta)]}


def _window(messages: list[Any]) -> list[Any]:
    """The recent conversation, starting at a person's message (tool answers stay with their calls)."""
    start = max(0, len(messages) - WINDOW)
    while start < len(messages) and not isinstance(messages[start], HumanMessage):
        start += 1
    return messages[start:]


def _tool_rounds(messages: list[Any]) -> int:
    n = 0
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            break
        n += isinstance(m, AIMessage) and bool(m.tool_calls)
    return n


def agent(state: ChatState, runtime: Runtime[ChatSession]) -> dict:
    chat = runtime.context
    if chat.llm is None:
        return {"messages": [AIMessage(HINT)]}
    status = chat_tools.status(chat, chat_tools.RunRef()).text
    msgs = [SystemMessage(SYSTEM.format(status=status))] + _window(state["messages"])
    rounds = _tool_rounds(state["messages"])
    if rounds == 0 and chat._roles is not None:  # a new turn: the role's fallback chain starts at its head
        chat._turn += 1
        chat._roles.new_round(chat._turn)
    tools = chat_tools.tool_schemas() if rounds < MAX_TOOL_ROUNDS else ()
    try:
        msg = chat.llm.invoke(msgs, chat.usage, tools=tools)
    except Exception as exc:  # noqa: BLE001 - an LLM outage is an answer, not a crash
        log.warning("coordinator LLM call failed: %s", exc)
        return {"messages": [AIMessage(f"the LLM did not answer ({type(exc).__name__}); slash commands still work: /help")]}
    if not isinstance(msg, AIMessage):
        msg = AIMessage(_text(msg))
    return {"messages": [msg]}


def route_after_agent(state: ChatState) -> Literal["tools", "__end__"]:
    last = state["messages"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else END


def tools(state: ChatState, runtime: Runtime[ChatSession]) -> dict:
    last = state["messages"][-1]
    out = []
    for call in last.tool_calls:
        ans = chat_tools.call(runtime.context, call["name"], call.get("args") or {})
        out.append(ToolMessage(ans.text, tool_call_id=call["id"], name=call["name"],
                               artifact={"image": str(ans.image)} if ans.image else None))
    return {"messages": out}


builder = StateGraph(ChatState, context_schema=None)
builder.add_node("command", command)
builder.add_node("agent", agent)
builder.add_node("tools", tools)
builder.add_conditional_edges(START, route_input)
builder.add_edge("command", END)
builder.add_conditional_edges("agent", route_after_agent)
builder.add_edge("tools", "agent")


def coordinator_llm(spec: str, stack: ExitStack) -> tuple[Any, Any]:
    """The coordinator role's LLM chain from an --llm spec (agents.roles: `openai:M`, `local`,
    `coordinator=openai:M>local,default=none`, ...), with the role set it belongs to; (None, None)
    when the coordinator has no LLM (free text then gets a hint)."""
    from .roles import build, resolve

    roles = build(resolve(spec), stack)
    llm = roles.get("coordinator") if roles is not None else None
    return (llm, roles) if llm is not None else (None, None)


class ChatSession:
    """One chat session: its conversation (checkpointed), its runs, its LLM and its stores."""

    def __init__(self, *, session_id: str | None = None, root: str | Path | None = None, llm: str | None = None,
                 memory: str | None = None, data: str | None = None, embedding: str | None = None,
                 approve: bool | None = None, create: bool = True, storage: str | None = None) -> None:
        from archlore.tools.storage import parse_url

        from .llm import Usage

        if storage:
            parse_url(storage)  # a malformed URL is refused before a session is made
        self._stack = ExitStack()
        self.store = self._stack.enter_context(SessionStore(root))
        self.root = self.store.root
        given = {"llm": llm, "memory": memory, "data": data, "embedding": embedding, "approve": approve}
        self.session = self.store.open(session_id, defaults={k: v for k, v in given.items() if v is not None}, create=create)
        self.defaults = {**self.session.defaults, **{k: v for k, v in given.items() if v is not None}}
        self.approve = bool(self.defaults.get("approve", True))
        try:
            self.storage = self._storage(storage)
        except BaseException:
            self._stack.close()
            raise
        self._listeners: list[Callable[[dict], None]] = []
        self.usage = Usage()
        self.llm, self._roles = coordinator_llm(self.defaults.get("llm") or "none", self._stack)
        self._turn = 0
        self.runs = RunManager(self.root, self.store, self.session.id, self.defaults, self._notify, storage=self.storage)
        self.graph = builder.compile(checkpointer=self.store.checkpointer)
        self._memory: Any = None
        self._baselines: dict[tuple, Any] = {}
        self._send_lock = threading.Lock()

    def _storage(self, given: str | None) -> str | None:
        """Where this session's runs live: --storage, else the session's own, else $ARCHLORE_STORAGE
        for a session without runs yet; None: run folders under the runs dir. The session itself
        (its conversation and list of runs) stays in the local sessions database."""
        import json

        from archlore.tools.env import env
        from archlore.tools.storage import parse_url, redact

        had = self.session.defaults.get("storage")
        if given is None:
            given = had if "storage" in self.session.defaults or self.session.runs else (env().archlore_storage or None)
        if given:
            parse_url(given)  # a malformed URL is one line now
        if (given or None) != (had or None) and self.session.runs:
            where = redact(had) if had else f"run folders under {self.root}"
            raise ConfigError(f"session {self.session.id} keeps its runs in {where}: open it with "
                              + (f"--storage {where}" if had else "no --storage") + ", or start a new session")
        if "storage" not in self.session.defaults or had != given:
            self.defaults["storage"] = given or None
            with self.store._lock, self.store._db:
                self.store._db.execute("UPDATE chat_sessions SET defaults = ? WHERE id = ?",
                                       (json.dumps({**self.session.defaults, "storage": given or None}), self.session.id))
        return given or None

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def where(self) -> str:
        """Where this session's runs live, for people (a storage URL without its password)."""
        from archlore.tools.storage import redact

        return redact(self.storage) if self.storage else str(self.root)

    def view(self, run_id: str) -> dict[str, Any]:
        """A run of this session as a record (current while it runs), wherever its runs live."""
        return chat_tools.run_view(self.root, run_id, storage=self.storage)

    def figure_path(self, run_id: str, kind: str) -> Path:
        """Where /plot draws a run's figure: its folder, or a local figures folder for a stored run."""
        from .runner import check_run_id

        folder = self.root / (".figures" if self.storage else "") / check_run_id(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"plot-{kind}.png"

    def listen(self, fn: Callable[[dict], None]) -> None:
        self._listeners.append(fn)

    def _notify(self, ev: dict) -> None:
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:  # a display must never stop a run
                log.exception("chat listener failed")

    def open(self) -> list[str]:
        """Resume what a killed process left (runs); lines to show the person."""
        return self.runs.reopen()

    def history(self) -> list[tuple[str, str, str | None]]:
        """(role, text, image) of the conversation so far, tool traffic left out."""
        out = []
        for m in self.store.messages(self.id):
            if isinstance(m, HumanMessage):
                out.append(("user", _text(m), None))
            elif isinstance(m, AIMessage) and _text(m):
                out.append(("assistant", _text(m), (m.response_metadata or {}).get("image")))
        return out

    def send(self, text: str) -> Iterator[dict[str, Any]]:
        """Answer one message; yields {"type": "token"|"message"|"tool"|"image", ...} as it goes."""
        text = (text or "").strip()
        if not text:
            return
        self.store.touch(self.id, title=text)
        config = {"configurable": {"thread_id": self.id}, "recursion_limit": 4 * MAX_TOOL_ROUNDS + 6}
        with self._send_lock:
            streamed = False
            try:
                for mode, chunk in self.graph.stream({"messages": [HumanMessage(text)]}, config, context=self,
                                                     stream_mode=["messages", "updates"]):
                    if mode == "messages":
                        msg, meta = chunk
                        if meta.get("langgraph_node") == "agent" and isinstance(msg, AIMessageChunk) and _text(msg):
                            streamed = True
                            yield {"type": "token", "text": _text(msg)}
                        continue
                    for node, update in (chunk or {}).items():
                        for m in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                            if isinstance(m, ToolMessage):
                                yield {"type": "tool", "name": m.name, "text": _text(m)}
                                if m.artifact and m.artifact.get("image"):
                                    yield {"type": "image", "path": m.artifact["image"]}
                            elif isinstance(m, AIMessage):
                                if m.tool_calls:
                                    yield {"type": "calls", "names": [c["name"] for c in m.tool_calls]}
                                if _text(m) and not (node == "agent" and streamed):
                                    yield {"type": "message", "text": _text(m)}
                                elif _text(m):
                                    yield {"type": "end"}
                                img = (m.response_metadata or {}).get("image")
                                if img:
                                    yield {"type": "image", "path": img}
                                streamed = False
            except ArchloreError as exc:
                yield {"type": "message", "text": f"error: {exc}"}

    def reply(self, text: str) -> str:
        """The whole answer as text (tests, scripts)."""
        parts: list[str] = []
        buf: list[str] = []
        for ev in self.send(text):
            if ev["type"] == "token":
                buf.append(ev["text"])
            elif ev["type"] == "end":
                parts.append("".join(buf))
                buf = []
            elif ev["type"] in ("message", "tool"):
                parts.append(("[{}] ".format(ev["name"]) if ev["type"] == "tool" else "") + ev["text"])
        parts.append("".join(buf))
        return "\n".join(p for p in parts if p)

    def set_approval(self, on: bool) -> None:
        import json

        from .runner import load_settings

        self.approve = on
        self.defaults["approve"] = on
        with self.store._lock, self.store._db:  # the session's default for its next runs
            self.store._db.execute("UPDATE chat_sessions SET defaults = ? WHERE id = ?", (json.dumps(self.defaults), self.id))
        for r in self.store.runs(self.id):  # runs that are not searching take it at their next start
            if r.status in ("waiting", "paused", "running") and not (self.runs.busy() and self.runs.active == r.run_id):
                try:
                    if self.storage:
                        from archlore.tools.storage import RunStore

                        from .stored import update_settings

                        with RunStore(self.storage) as store:
                            update_settings(store, r.run_id, approve=on)
                        continue
                    s = load_settings(self.root / r.run_id)
                    s.approve = on
                    s.save(self.root / r.run_id / "settings.json")
                except ArchloreError:
                    pass
        waiting = self.runs.waiting()
        if waiting and not on:
            self.runs.resume(waiting["run_id"], answer={"action": "approve"})

    def memory_query(self, text: str, *, space: str | None, task: str | None, k: int) -> list[dict]:
        spec = self.defaults.get("memory")
        if spec == "off":
            raise ConfigError("this session runs with --memory off: start the chat with --memory PATH to search one")
        if self._memory is None:
            from archlore.memory.store import open_store

            self._memory = self._stack.enter_context(open_store(spec, embedding=self.defaults.get("embedding") or "minilm"))
        return self._memory.query(text, space=space, task=task, k=k)

    def baselines(self, record: dict) -> dict:
        from . import plots

        s = record.get("settings") or {}
        key = (s.get("space"), s.get("target"), record.get("budget"), s.get("population"), s.get("tournament"), s.get("table"))
        if key not in self._baselines:
            self._baselines[key] = plots.baseline_curves(record, data=self.defaults.get("data"))
        return self._baselines[key]

    def close(self) -> None:
        self.runs.close()
        self._stack.close()
