"""`archlore ui`: the chat coordinator as a local web page (NiceGUI), on 127.0.0.1 only.

The page holds the same sessions as the terminal chat (agents.sessions): the conversation with
streaming replies, the approval step as buttons (approve, or edit the filter position by position),
live figures of the current run (agents.plots: best-so-far beside the baselines, the filter grid,
the principle timeline), a stop button, and the memory browser (principles across tasks with their
provenance). `?session=ID` opens a session; a reload finds it again. The server keeps one
ChatSession per session id; the chat and the runs work in threads, the page polls them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from archlore.tools.errors import ArchloreError

from . import chat_tools
from .chat import ChatSession

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sessions:
    """One ChatSession per session id, shared by every browser tab of this server."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._open: dict[str, ChatSession] = {}
        self._lock = threading.Lock()
        self.first: str | None = None

    def get(self, session_id: str | None) -> ChatSession:
        with self._lock:
            if session_id and session_id in self._open:
                return self._open[session_id]
            chat = ChatSession(session_id=session_id, **self.options)
            self._open[chat.id] = chat
            chat.open()
            return chat

    def known(self) -> list[str]:
        if not self._open:
            return []
        any_chat = next(iter(self._open.values()))
        return [s.id for s in any_chat.store.list()]

    def close(self) -> None:
        for chat in self._open.values():
            chat.close()


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def build(sessions: Sessions) -> None:
    from nicegui import run, ui

    @ui.page("/")
    async def index(session: str | None = None) -> None:
        chat = await run.io_bound(sessions.get, session or sessions.first)
        sessions.first = sessions.first or chat.id
        ui.page_title(f"archlore · {chat.id}")
        with ui.header().classes("items-center"):
            ui.label("archlore").classes("text-h6")
            ui.label(f"session {chat.id}").props("id=session-id").classes("text-subtitle2")
            ui.space()
            ids = sessions.known()
            ui.select(ids, value=chat.id, label="sessions",
                      on_change=lambda e: ui.navigate.to(f"/?session={e.value}")).props("dense dark outlined").classes("w-64")
            ui.button("new session", on_click=lambda: ui.navigate.to(f"/?session={_new_id()}")).props("flat color=white")

        with ui.row().classes("w-full no-wrap items-start"):
            with ui.column().classes("w-1/2"):
                messages = ui.scroll_area().classes("w-full h-[60vh]").props("id=messages")
                with messages:
                    for role, text, image in chat.history():
                        _bubble(role, text, image)
                with ui.row().classes("w-full no-wrap"):
                    box = ui.input(placeholder="ask, or a /command (/help)").props("autofocus").classes("grow")
                    send_btn = ui.button("send").props("id=send")
                    ui.button("stop search", on_click=lambda: _stop()).props("id=stop color=warning")
                progress = ui.label("").props("id=progress").classes("text-caption")
            with ui.column().classes("w-1/2"):
                approval = ui.card().classes("w-full").props("id=approval")
                approval.set_visibility(False)
                with ui.tabs() as tabs:
                    tab_plot = ui.tab("figures")
                    tab_mem = ui.tab("memory")
                with ui.tab_panels(tabs, value=tab_plot).classes("w-full"):
                    with ui.tab_panel(tab_plot):
                        plot_images = {k: ui.image().props(f"id=plot-{k}").classes("w-full") for k in ("curve", "filter", "principles")}
                        plot_caption = ui.label("no run yet").props("id=plot-caption").classes("text-caption")
                    with ui.tab_panel(tab_mem):
                        with ui.row().classes("w-full no-wrap"):
                            q = ui.input(placeholder="search principles across tasks").classes("grow").props("id=memory-query")
                            space = ui.select(["any", "nb201", "tnb101"], value="any").classes("w-28")
                            ui.button("search", on_click=lambda: _memory()).props("id=memory-search")
                        mem_out = ui.column().classes("w-full")

        state: dict[str, Any] = {"sig": None, "waiting": None, "rendering": False}

        async def _send() -> None:
            text = (box.value or "").strip()
            if not text:
                return
            box.value = ""
            with messages:
                _bubble("user", text, None)
                reply = ui.chat_message(name="archlore", sent=False).classes("w-full")
            with reply:
                body = ui.label("…").classes("whitespace-pre-wrap")
            messages.scroll_to(percent=1.0)
            events: list[dict] = []
            done = threading.Event()

            def work() -> None:
                try:
                    for ev in chat.send(text):  # one by one: the page shows each as it comes
                        events.append(ev)  # noqa: PERF402
                finally:
                    done.set()

            threading.Thread(target=work, daemon=True).start()
            shown, buf, parts = 0, "", []
            while not done.is_set() or shown < len(events):
                await asyncio.sleep(0.05)
                for ev in events[shown:]:
                    shown += 1
                    t = ev["type"]
                    if t == "token":
                        buf += ev["text"]
                    elif t == "end":
                        parts.append(buf)
                        buf = ""
                    elif t in ("message", "tool"):
                        parts.append(f"`{ev['name']}`: " + ev["text"] if t == "tool" else ev["text"])
                    elif t == "calls":
                        parts.append("→ " + ", ".join(ev["names"]))
                    elif t == "image":
                        with reply:
                            ui.image(_png_url(Path(ev["path"]).read_bytes())).classes("w-full")
                body.set_text("\n".join(p for p in parts + [buf] if p) or "…")
                messages.scroll_to(percent=1.0)
            await _refresh(force=True)

        send_btn.on_click(_send)
        box.on("keydown.enter", _send)

        async def _stop() -> None:
            run_id = await run.io_bound(chat.runs.stop)
            ui.notify(f"stopped {run_id}; /continue resumes it" if run_id else "no search is running")

        async def _memory() -> None:
            text = (q.value or "").strip()
            if not text:
                return
            ans = await run.io_bound(chat_tools.call, chat, "query_memory",
                                     {"text": text, **({} if space.value == "any" else {"space": space.value})})
            mem_out.clear()
            with mem_out:
                rows = ans.data.get("rows")
                if not rows:
                    ui.label(ans.text)
                    return
                ui.table(columns=[{"name": k, "label": k, "field": k, "align": "left"} for k in ("sim", "task", "principle", "from data")],
                         rows=[{"sim": f"{r.get('similarity', 0):.2f}", "task": f"{r.get('space', '?')}/{r.get('task', '?')}",
                                "principle": r.get("text", ""), "from data": ", ".join(chat_tools.data_tasks(r))} for r in rows]).classes("w-full")

        async def _answer(payload: dict) -> None:
            name = "approve_filter" if payload.get("action") == "approve" else "edit_filter"
            args = {} if name == "approve_filter" else {"choices": payload["filter"]}
            ans = await run.io_bound(chat_tools.call, chat, name, args)
            with messages:
                _bubble("assistant", ans.text, None)
            messages.scroll_to(percent=1.0)
            await _refresh(force=True)

        def _show_approval(w: dict | None) -> None:
            approval.clear()
            approval.set_visibility(bool(w))
            if not w:
                return
            with approval:
                ui.label(f"run {w['run_id']}: the planner's round-{w['round']} filter ({w['size']} cells) waits for you").classes("text-subtitle1")
                picks = {}
                from archlore.tools.spaces import get_space

                try:
                    sp = get_space(chat.view(w["run_id"])["settings"]["space"])
                    options = {p.name: list(p.choices) for p in sp.positions}
                except ArchloreError:
                    options = {k: list(v) for k, v in w["allowed"].items()}
                for pos, allowed in w["allowed"].items():
                    picks[pos] = ui.select(options.get(pos, allowed), value=list(allowed), multiple=True, label=pos).classes("w-full").props("dense")
                with ui.row():
                    ui.button("approve", on_click=lambda: _answer({"action": "approve"})).props("id=approve color=positive")
                    ui.button("apply edit and approve",
                              on_click=lambda: _answer({"action": "edit", "filter": {k: list(s.value or []) for k, s in picks.items()}})
                              ).props("id=apply-edit")

        async def _refresh(force: bool = False) -> None:
            runs = chat.runs
            run_id = runs.active or (chat.store.runs(chat.id)[-1].run_id if chat.store.runs(chat.id) else None)
            if run_id is None:
                return
            p = runs.progress(run_id)
            w = runs.waiting()
            busy = runs.busy()
            best = p.get("best")
            progress.set_text(f"{run_id}: {'searching' if busy else p.get('status', '?')} · {p.get('used', 0)}/{p.get('budget', '?')} "
                              f"evaluations · best {'-' if best is None else f'{best:.4f}'}")
            if (w or {}).get("round", -1) != (state["waiting"] or {}).get("round", -1) or bool(w) != bool(state["waiting"]) or force:
                state["waiting"] = w
                _show_approval(w)
            sig = (run_id, p.get("used"), p.get("status"), busy, bool(w), (w or {}).get("round"))
            # one drawing at a time; a change seen meanwhile is drawn at the next tick (sig not yet stored)
            if (sig == state["sig"] and not force) or state["rendering"]:
                return
            state["rendering"] = True
            try:
                rec = await run.io_bound(chat.view, run_id)
                pngs = await run.io_bound(_figures, chat, rec)
                for kind, png in pngs.items():
                    plot_images[kind].set_source(_png_url(png))
                plot_caption.set_text(f"{run_id}: {rec['used']} evaluations, {len(rec.get('filters') or [])} filters")
                state["sig"] = sig
            except ArchloreError as exc:
                plot_caption.set_text(str(exc))
            finally:
                state["rendering"] = False

        ui.timer(1.0, _refresh)
        ui.timer(0.3, lambda: messages.scroll_to(percent=1.0), once=True)  # a reopened session shows its latest turn


def _figures(chat: ChatSession, rec: dict) -> dict[str, bytes]:
    from . import plots

    base = chat.baselines(rec)
    return {k: plots.png_bytes(rec, k, baselines=base if k == "curve" else None) for k in ("curve", "filter", "principles")}


def _bubble(role: str, text: str, image: str | None) -> None:
    from nicegui import ui

    with ui.chat_message(name="you" if role == "user" else "archlore", sent=role == "user").classes("w-full"):
        ui.label(text).classes("whitespace-pre-wrap")  # answers are plain text: names like nor_conv_3x3 stay as they are
        if image and Path(image).is_file():
            ui.image(_png_url(Path(image).read_bytes())).classes("w-full")


def _new_id() -> str:
    from .sessions import new_session_id

    return new_session_id()


def serve(*, root: str | Path | None = None, session: str | None = None, llm: str | None = None, memory: str | None = None,
          data: str | None = None, approve: bool | None = None, port: int = 0, show: bool = False,
          storage: str | None = None) -> None:
    from nicegui import app, ui

    sessions = Sessions(root=root, llm=llm, memory=memory, data=data, approve=approve, storage=storage)
    first = sessions.get(session)  # a bad --runs-dir or session id fails here, before serving
    sessions.first = first.id
    build(sessions)
    app.on_shutdown(sessions.close)
    port = port or free_port()
    print(f"archlore ui: http://127.0.0.1:{port}/?session={first.id}  (Ctrl-C stops the server)", flush=True)
    ui.run(host="127.0.0.1", port=port, reload=False, show=show, title="archlore", show_welcome_message=False,
           uvicorn_logging_level="warning")
