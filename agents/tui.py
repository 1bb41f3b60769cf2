"""`archlore chat`: the coordinator in a terminal.

prompt_toolkit reads the input (history kept per runs folder, completion of slash commands, a
bottom bar with the live progress of the search); rich prints the answers, which stream in as the
LLM writes them. A search runs in a background thread, so questions can be asked while it
evaluates. Ctrl-C stops the running search after the evaluation in flight (nothing finished is
lost; /continue resumes it) or, while an answer streams, stops the answer. Ctrl-D or /quit leaves;
a run still searching then is resumed when the session is opened again (`--session ID`).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from .chat import ChatSession
from .chat_tools import COMMANDS


def _waiting_panel(w: dict[str, Any]) -> Panel:
    body = "\n".join(f"[bold]{escape(k)}[/]: {escape(', '.join(v))}" for k, v in w["allowed"].items())
    return Panel(body, title=f"run {escape(w['run_id'])}: round-{w['round']} filter, {w['size']} cells, waiting",
                 subtitle="/approve · /edit filter POS=CHOICE,CHOICE · /edit principle N drop", expand=False)


class Terminal:
    def __init__(self, chat: ChatSession, console: Console) -> None:
        self.chat, self.console = chat, console
        chat.listen(self.on_event)

    def on_event(self, ev: dict) -> None:
        kind = ev.get("kind")
        if kind == "run_end":
            status = ev["status"]
            if status == "waiting" and ev.get("waiting"):
                self.console.print(_waiting_panel(ev["waiting"]))
            elif status == "done":
                p = self.chat.runs.progress(ev["run_id"])
                best = p.get("best")
                self.console.print(f"[green]run {escape(ev['run_id'])} finished[/]: {p.get('used')} evaluations, best valid "
                                   + ("-" if best is None else f"{best:.4f}") + " · /compare · /plot · `archlore show " + escape(ev["run_id"]) + "`")
            elif status == "paused":
                self.console.print(f"[yellow]run {escape(ev['run_id'])} paused[/] after {self.chat.runs.progress(ev['run_id']).get('used')} evaluations: /continue resumes it")
            elif status == "failed":
                self.console.print(f"[red]run {escape(ev['run_id'])} failed[/]: {escape(ev.get('detail') or '')}")
        elif kind == "filter":
            self.console.print(f"[dim]planner: filter of {ev['size']} cells ({escape(str(ev.get('how')))})[/]")
        elif kind == "principles":
            self.console.print(f"[dim]analyst ({escape(str(ev.get('mode')))}): {ev.get('n')} principles[/]")

    def toolbar(self) -> str:
        runs = self.chat.runs
        if not runs.active:
            return f" session {self.chat.id} · /help · Ctrl-D leaves"
        p = runs.progress(runs.active)
        best = p.get("best")
        state = p.get("status", "?") if not runs.busy() else "searching (Ctrl-C stops)"
        return (f" {runs.active}: {state} · {p.get('used', 0)}/{p.get('budget', '?')} evaluations · best "
                + ("-" if best is None else f"{best:.4f}") + f" · round {p.get('round', 0)}"
                + (f" · filter {p['filter']}" if p.get("filter") else ""))

    def answer(self, text: str) -> None:
        streaming = False
        for ev in self.chat.send(text):
            t = ev["type"]
            if t == "token":
                if not streaming:
                    self.console.print("[bold cyan]archlore[/] ", end="")
                    streaming = True
                self.console.print(ev["text"], end="", markup=False, highlight=False)
                self.console.file.flush()
            elif t == "end":
                self.console.print()
                streaming = False
            elif t == "message":
                self.console.print("[bold cyan]archlore[/] ", end="")
                self.console.print(ev["text"], markup=False, highlight=False)
            elif t == "calls":
                self.console.print(f"[dim]→ {escape(', '.join(ev['names']))}[/]")
            elif t == "tool":
                self.console.print(f"[dim]{escape(ev['text'][:400])}[/]")
            elif t == "image":
                self.console.print(f"[dim]figure written: {escape(ev['path'])}[/]")
        if streaming:
            self.console.print()
        w = self.chat.runs.waiting()
        if w and text.strip().split()[0] in ("/filter",):
            self.console.print(_waiting_panel(w))


def run_terminal(chat: ChatSession) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    tty = sys.stdout.isatty()
    history = FileHistory(str(chat.root / ".chat_history"))
    prompt = PromptSession(history=history, completer=WordCompleter(list(COMMANDS), sentence=True, match_middle=False),
                           complete_while_typing=True)
    with patch_stdout(raw=True):
        console = Console(file=sys.stdout, force_terminal=tty, soft_wrap=True, highlight=False)
        term = Terminal(chat, console)
        console.print(f"[bold]archlore chat[/] · session [bold]{escape(chat.id)}[/] · llm {escape(chat.defaults.get('llm') or 'none')} "
                      f"· runs in {escape(chat.where)} · /help lists the commands")
        for role, text, _ in chat.history()[-10:]:
            console.print(("[bold]you[/] " if role == "user" else "[bold cyan]archlore[/] ") + escape(text[:500]))
        for note in chat.open():
            console.print(f"[yellow]{escape(note)}[/]")
        w = chat.runs.waiting()
        if w:
            console.print(_waiting_panel(w))
        while True:
            try:
                text = prompt.prompt("archlore> ", bottom_toolbar=term.toolbar, refresh_interval=0.5)
            except KeyboardInterrupt:
                if chat.runs.busy():
                    console.print("[yellow]stopping the search after the evaluation in flight...[/]")
                    chat.runs.stop()
                else:
                    console.print("[dim](no search is running; Ctrl-D or /quit leaves)[/]")
                continue
            except EOFError:
                break
            if text.strip() in ("/quit", "/exit"):
                break
            if not text.strip():
                continue
            try:
                term.answer(text)
            except KeyboardInterrupt:
                console.print("\n[yellow](answer stopped)[/]")
        if chat.runs.busy():
            console.print(f"[yellow]leaving: run {escape(chat.runs.active or '')} stops after the evaluation in flight; "
                          f"`archlore chat --session {escape(chat.id)}` resumes it[/]")
    chat.close()
    return 0
