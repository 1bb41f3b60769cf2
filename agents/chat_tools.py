"""What the chat coordinator can do, once: as tools the LLM calls and as slash commands a person types.

Each action is a function `(chat, args) -> Answer` with a pydantic model for its arguments; that
model is also the tool schema the LLM sees (infrastructure, the run manager and the stores, never
appears in it: it reaches the action through `chat`). A slash command parses its words into the
same model, so `/run target=cifar100 budget=30` and the LLM's `start_run` call are one code path,
and a session is fully usable with `--llm none`. Bad input of any kind is a one-line answer.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from archlore.tools.errors import ArchloreError, ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from .chat import ChatSession


@dataclass
class Answer:
    text: str
    image: Path | None = None  # a figure the page shows (the terminal prints its path)
    data: dict[str, Any] = field(default_factory=dict)


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- run views: a record-shaped dict of any run, finished or in progress ----


def run_view(root: Path, run_id: str, storage: str | None = None) -> dict[str, Any]:
    """The run's record, refreshed from its ledger (so a run in progress is current too): from
    its folder under `root`, or from the shared `storage` (a sqlite:// or postgresql:// URL)."""
    from archlore.tools.ledger import Ledger

    from .context import RunSettings
    from .runner import check_run_id, load_settings

    if storage:
        from archlore.tools.storage import RunStore

        with RunStore(storage) as store:
            raw = store.settings(check_run_id(run_id))
            if raw is None:
                raise ConfigError(f"no run {run_id!r} in {store.location}; /status lists this session's runs")
            rec = store.record(run_id) or {}
            return _refreshed(rec, run_id, RunSettings.from_json(raw), store.ledger)
    run_dir = root / check_run_id(run_id)
    if not (run_dir / "settings.json").is_file():
        raise ConfigError(f"no run {run_id!r} in {root}; /status lists this session's runs")
    rec: dict[str, Any] = {}
    if (run_dir / "record.json").is_file():
        try:
            rec = json.loads((run_dir / "record.json").read_text())
        except (OSError, ValueError):
            rec = {}
    ledger = Ledger(run_dir / "ledger.db") if (run_dir / "ledger.db").is_file() else None
    try:
        return _refreshed(rec, run_id, load_settings(run_dir), ledger)
    finally:
        if ledger is not None:
            ledger.close()


def _refreshed(rec: dict[str, Any], run_id: str, settings: Any, ledger: Any) -> dict[str, Any]:
    rec.update(run_id=run_id, settings=settings.to_json(), space=rec.get("space", settings.space),
               target=settings.target, source=settings.source, llm=settings.llm, budget=settings.budget)
    if ledger is not None:
        evs = ledger.evaluations(run_id)
        rec["evaluations"] = [e.to_dict() for e in evs]
        rec["principles_history"] = ledger.journal(run_id, "principles")
        rec["filters"] = ledger.journal(run_id, "filter")
        rec["events"] = ledger.journal(run_id, "event")
        best = max(evs, key=lambda e: e.valid) if evs else None
        rec["best"] = {"arch": best.arch, "valid": best.valid, "test": best.test} if best else None
        rec["used"] = len(evs)
        if rec["principles_history"]:
            rec["principles"] = rec["principles_history"][-1]["principles"]
    rec.setdefault("evaluations", [])
    rec.setdefault("used", len(rec["evaluations"]))
    return rec


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


# ---- the actions ----


class StartRun(Args):
    """Start a new search run (an ordinary archlore run, in the session's runs folder)."""

    target: str = Field("cifar100", description="target task, e.g. cifar100 or imagenet16-120")
    source: str = Field("cifar10", description="source task the first principles come from; 'none' for none")
    budget: int = Field(20, ge=1, le=100000, description="evaluations to spend")
    space: str = Field("nb201", description="nb201, tnb101 or a space file")
    seed: int = Field(0, ge=0)
    strategy: str = Field("guided-rea", description="the search step: guided-rea, rea, random or guided-rank inside the filter; rank alone (no analyst or planner)")
    approve: bool | None = Field(None, description="wait for approval of each filter (default: the session's setting)")


def start_run(chat: ChatSession, a: StartRun) -> Answer:
    run_id = chat.runs.start(
        target=a.target, source=None if a.source in ("", "none") else a.source, budget=a.budget,
        space=a.space, seed=a.seed, strategy=a.strategy, approve=chat.approve if a.approve is None else a.approve,
    )
    return Answer(f"started run {run_id}: {a.space} {a.source} -> {a.target}, {a.budget} evaluations"
                  + (", filters wait for /approve" if (chat.approve if a.approve is None else a.approve) else ""))


class RunRef(Args):
    run_id: str | None = Field(None, description="a run of this session (default: the current one)")


def continue_run(chat: ChatSession, a: RunRef) -> Answer:
    run_id = chat.runs.current(a.run_id)
    chat.runs.resume(run_id)
    return Answer(f"continuing run {run_id}")


class NoArgs(Args):
    pass


def pause_run(chat: ChatSession, a: NoArgs) -> Answer:
    run_id = chat.runs.stop()
    if run_id is None:
        return Answer("no search is running")
    return Answer(f"paused run {run_id}: every finished evaluation is kept; /continue resumes it")


def status(chat: ChatSession, a: RunRef) -> Answer:
    runs = chat.store.runs(chat.session.id)
    if not runs:
        return Answer("no runs in this session yet: /run target=cifar100 budget=20 starts one (/help for more)")
    lines = []
    for r in runs:
        try:
            rec = chat.view(r.run_id)
        except ArchloreError as exc:
            lines.append(f"{r.run_id}: {r.status} ({exc})")
            continue
        best = rec.get("best") or {}
        live = chat.runs.progress(r.run_id)
        state = live.get("status", r.status)
        lines.append(
            f"{r.run_id}: {state}, {rec['used']}/{rec['budget']} evaluations, {rec.get('source') or '-'} -> "
            f"{rec['target']}, best valid {_fmt(best.get('valid'))} test {_fmt(best.get('test'))}, "
            f"{len(rec.get('filters') or [])} filters" + (f" ({r.detail})" if r.detail and state == "failed" else "")
        )
        if best.get("arch"):
            lines.append(f"  best cell {best['arch']}; {max(0, rec['budget'] - rec['used'])} evaluations of the budget left")
    waiting = chat.runs.waiting()
    if waiting:
        lines.append(f"run {waiting['run_id']} waits for approval of its round-{waiting['round']} filter "
                     f"({waiting['size']} cells): /filter shows it, /approve or /edit answers")
    return Answer("\n".join(lines))


def _effects(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(rec.get("principles") or [])


def show_principles(chat: ChatSession, a: RunRef) -> Answer:
    run_id = chat.runs.current(a.run_id)
    eff = _effects(chat.view(run_id))
    if not eff:
        return Answer(f"run {run_id} has no principles yet")
    lines, last = [f"principles of {run_id} (/principles N explains one with its rows; /edit principle N ...):"], None
    for i, p in enumerate(eff, 1):
        lines.append(f"{i}. {p['direction']} {p['choice']} @ {p['position']} (confidence {p['confidence']:.2f})"
                     + ("" if p["text"] == last else f": {p['text']}"))
        last = p["text"]
    return Answer("\n".join(lines))


class Explain(Args):
    """Explain one principle with its evidence: the evaluated rows that support or contradict it."""

    number: int = Field(ge=1, description="the principle's number in /principles")
    run_id: str | None = None


def explain_principle(chat: ChatSession, a: Explain) -> Answer:
    from archlore.tools.spaces import get_space

    run_id = chat.runs.current(a.run_id)
    rec = chat.view(run_id)
    eff = _effects(rec)
    if not 1 <= a.number <= len(eff):
        return Answer(f"run {run_id} has {len(eff)} principles: give a number from 1 to {len(eff)}" if eff else f"run {run_id} has no principles yet")
    p = eff[a.number - 1]
    space = get_space(rec["settings"]["space"])
    names = [q.name for q in space.positions]
    at = [i for i, n in enumerate(names) if p["position"] in (n, "*")]
    rows = []
    for e in rec["evaluations"]:
        arch = space.from_string(e["arch"])
        has = any(space.positions[i].choices[arch[i]] == p["choice"] for i in at)
        rows.append((has, e))
    with_ = [e["valid"] for has, e in rows if has]
    without = [e["valid"] for has, e in rows if not has]
    lines = [f"{a.number}. {p['direction']} {p['choice']} @ {p['position']} (confidence {p['confidence']:.2f}): {p['text']}",
             f"evidence given: {p.get('evidence') or '-'}"]
    if rows:
        mean = lambda xs: sum(xs) / len(xs) if xs else None
        lines.append(f"this run: {len(with_)} evaluated cells have it (mean valid {_fmt(mean(with_))}), "
                     f"{len(without)} do not ({_fmt(mean(without))})")
        top = sorted((e for has, e in rows if has), key=lambda e: -e["valid"])[:5]
        lines += [f"  {e['arch']}  valid {e['valid']:.4f}" for e in top]
    else:
        lines.append("this run has no evaluations yet to check it against")
    return Answer("\n".join(lines))


def show_filter(chat: ChatSession, a: RunRef) -> Answer:
    waiting = chat.runs.waiting()
    if waiting and (a.run_id in (None, waiting["run_id"])):
        body = "\n".join(f"  {k}: {', '.join(v)}" for k, v in waiting["allowed"].items())
        return Answer(f"run {waiting['run_id']}, round {waiting['round']}: the planner proposes {waiting['size']} cells, "
                      f"waiting for you (/approve, or /edit filter POSITION=CHOICE,CHOICE):\n{body}", data={"waiting": waiting})
    run_id = chat.runs.current(a.run_id)
    filters = chat.view(run_id).get("filters") or []
    if not filters:
        return Answer(f"run {run_id} has no filter yet")
    f = filters[-1]
    body = "\n".join(f"  {k}: {', '.join(v)}" for k, v in f["allowed"].items())
    return Answer(f"run {run_id}, round {f['round']} ({f['how']}): {f['size']} cells\n{body}")


class Approval(Args):
    on: bool | None = Field(None, description="None: approve the waiting filter; true/false: switch approval on/off")


def approve_filter(chat: ChatSession, a: Approval) -> Answer:
    if a.on is not None:
        chat.set_approval(a.on)
        return Answer(f"approval {'on' if a.on else 'off'}: " + (
            "each planned filter waits for /approve" if a.on else "filters are used as planned (a waiting one is approved now)"))
    waiting = chat.runs.waiting()
    if not waiting:
        return Answer("no filter is waiting for approval")
    chat.runs.resume(waiting["run_id"], answer={"action": "approve"})
    return Answer(f"approved the round-{waiting['round']} filter of {waiting['run_id']} ({waiting['size']} cells); searching")


class EditFilter(Args):
    """Change the waiting filter: the allowed choices at some positions (others stay as planned)."""

    choices: dict[str, list[str]] = Field(description="position name -> allowed choice names, e.g. {'edge3<-2': ['skip_connect']}")


def edit_filter(chat: ChatSession, a: EditFilter) -> Answer:
    from archlore.tools.spaces import SpaceFilter, get_space

    waiting = _waiting_or_fail(chat)
    space = get_space(chat.view(waiting["run_id"])["settings"]["space"])
    allowed = {k: list(v) for k, v in waiting["allowed"].items()}
    for pos, cs in a.choices.items():
        if pos not in allowed:
            raise ConfigError(f"no position {pos!r}: use one of {', '.join(allowed)}")
        allowed[pos] = list(cs)
    new = SpaceFilter.from_choices(space, [allowed[p.name] for p in space.positions])  # FilterError names the fault
    chat.runs.resume(waiting["run_id"], answer={"action": "edit", "filter": allowed, "note": "edited in chat"})
    return Answer(f"filter edited ({new.size()} cells) and approved; searching")


class EditPrinciple(Args):
    """Change one principle of the waiting round: flip it, drop it or set its confidence."""

    number: int = Field(ge=1)
    action: Literal["prefer", "avoid", "drop", "confidence"] = "drop"
    confidence: float | None = Field(None, ge=0.0, le=1.0)


def edit_principle(chat: ChatSession, a: EditPrinciple) -> Answer:
    from .principles import conflicts

    waiting = _waiting_or_fail(chat)
    eff = _effects(chat.view(waiting["run_id"]))
    if not 1 <= a.number <= len(eff):
        raise ConfigError(f"give a principle number from 1 to {len(eff)} (/principles lists them)")
    p = dict(eff[a.number - 1])
    if a.action == "drop":
        new = eff[: a.number - 1] + eff[a.number:]
    else:
        if a.action == "confidence":
            if a.confidence is None:
                raise ConfigError("give the confidence: /edit principle N confidence 0.3")
            p["confidence"] = a.confidence
        else:
            p["direction"] = a.action
        new = eff[: a.number - 1] + [p] + eff[a.number:]
    from archlore.memory.record import Principle

    clash = conflicts([Principle(**q) for q in new])
    if clash:
        raise ConfigError(f"that would prefer and avoid {clash[0][0].choice} at {clash[0][0].position}; drop the other one first")
    chat.runs.resume(waiting["run_id"], answer={"action": "edit", "principles": new})
    return Answer(f"principle {a.number} {'dropped' if a.action == 'drop' else 'changed'}; the filter is approved and the search goes on with {len(new)} principles")


def _waiting_or_fail(chat: ChatSession) -> dict[str, Any]:
    waiting = chat.runs.waiting()
    if not waiting:
        raise ConfigError("nothing to edit now: edits answer a filter waiting for approval (keep /approve on and wait for the next round)")
    return waiting


class MemoryQuery(Args):
    """Search the principle memory across tasks (with where each principle came from)."""

    text: str = Field(min_length=1, max_length=400)
    space: str | None = None
    task: str | None = None
    k: int = Field(5, ge=1, le=50)


def query_memory(chat: ChatSession, a: MemoryQuery) -> Answer:
    rows = chat.memory_query(a.text, space=a.space, task=a.task, k=a.k)
    if not rows:
        return Answer("the memory has no principles" + (f" for {a.space or ''} {a.task or ''}".rstrip() if a.space or a.task else ""))
    lines = []
    for r in rows:
        data = data_tasks(r)
        lines.append(f"{r.get('similarity', 0):.2f}  [{r.get('space', '?')}/{r.get('task', '?')}] {r.get('text', '')}"
                     + (f"  (from data: {', '.join(data)}; run {r.get('run_id') or '?'})" if data else ""))
    return Answer("\n".join(lines), data={"rows": rows})


def data_tasks(row: dict[str, Any]) -> list[str]:
    """A memory row's provenance: the tasks whose data produced the principle."""
    raw = row.get("data_tasks") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return sorted({str(t).strip() for t in raw if str(t).strip()})


def compare(chat: ChatSession, a: RunRef) -> Answer:

    run_id = chat.runs.current(a.run_id)
    rec = chat.view(run_id)
    base = chat.baselines(rec)
    if not rec["evaluations"]:
        return Answer(f"run {run_id} has no evaluations yet")
    best = (rec.get("best") or {}).get("valid")
    n = len(rec["evaluations"])
    if not base:
        return Answer(f"run {run_id}: best valid {_fmt(best)} after {n}; baselines need a tabular run")
    lines = [f"run {run_id}: best valid {_fmt(best)} after {n} evaluations"]
    for name, curves in sorted(base.items()):
        at = curves[:, min(n, curves.shape[1]) - 1]
        beats = int(sum(best > v for v in at))
        lines.append(f"{name} ({len(at)} seeds, same budget): mean {at.mean():.4f} "
                     f"(range {at.min():.4f}-{at.max():.4f}); this run is better than {beats} of {len(at)}")
    return Answer("\n".join(lines))


class Plot(Args):
    kind: Literal["all", "curve", "filter", "principles"] = "all"
    run_id: str | None = None


def plot(chat: ChatSession, a: Plot) -> Answer:
    from . import plots

    run_id = chat.runs.current(a.run_id)
    rec = chat.view(run_id)
    path = chat.figure_path(run_id, a.kind)
    plots.save(rec, path, a.kind, baselines=chat.baselines(rec) if a.kind in ("all", "curve") else None)
    return Answer(f"figure: {path}", image=path)


@dataclass(frozen=True)
class Action:
    name: str
    fn: Callable[[Any, Any], Answer]
    args: type[Args]
    description: str


ACTIONS = {a.name: a for a in (
    Action("start_run", start_run, StartRun, "start a new search run"),
    Action("continue_run", continue_run, RunRef, "continue a paused or unfinished run"),
    Action("pause_run", pause_run, NoArgs, "stop the running search cleanly (evaluations are kept)"),
    Action("status", status, RunRef, "the session's runs: evaluations used, best cells, budget left"),
    Action("show_principles", show_principles, RunRef, "the current principles of a run"),
    Action("explain_principle", explain_principle, Explain, "one principle with its evidence rows"),
    Action("show_filter", show_filter, RunRef, "the current (or waiting) filter"),
    Action("approve_filter", approve_filter, Approval, "approve the waiting filter, or switch approval on/off"),
    Action("edit_filter", edit_filter, EditFilter, "edit and approve the waiting filter"),
    Action("edit_principle", edit_principle, EditPrinciple, "flip, drop or re-weight a principle of the waiting round"),
    Action("query_memory", query_memory, MemoryQuery, "search the principle memory across tasks"),
    Action("compare", compare, RunRef, "compare a run with random search and REA baselines"),
    Action("plot", plot, Plot, "draw a run's figures (best-so-far vs baselines, filter grid, principle timeline)"),
)}


def tool_schemas() -> list[dict[str, Any]]:
    """The OpenAI function schemas the coordinator binds (the arguments only: no infrastructure)."""
    out = []
    for a in ACTIONS.values():
        schema = a.args.model_json_schema()
        schema.pop("title", None)
        out.append({"type": "function", "function": {"name": a.name, "description": a.description, "parameters": schema}})
    return out


def call(chat: ChatSession, name: str, raw: Any) -> Answer:
    """Run one action from untrusted arguments (an LLM's tool call): errors become an Answer."""
    action = ACTIONS.get(name)
    if action is None:
        return Answer(f"error: no tool {name!r}; the tools are {', '.join(ACTIONS)}")
    try:
        args = action.args.model_validate(raw if isinstance(raw, dict) else json.loads(raw or "{}"))
        return action.fn(chat, args)
    except ValidationError as exc:
        return Answer("error: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:4]))
    except (ArchloreError, ValueError) as exc:
        return Answer(f"error: {' '.join(str(exc).split())}")


# ---- slash commands ----

HELP = """commands (every one is also something you can ask in words when an LLM is on):
  /run [target=cifar100] [source=cifar10] [budget=20] [space=nb201] [seed=0] [strategy=guided-rea] [approve=on|off]
  /continue [RUN]        continue a paused or unfinished run      /pause   stop the running search cleanly
  /status                the session's runs, budget, best cells
  /principles [N]        the current principles; N explains one with its rows
  /filter                the current filter (or the one waiting for approval)
  /approve [on|off]      approve the waiting filter; on/off switches approval for this session
  /edit filter POSITION=CHOICE[,CHOICE] ...     edit (and approve) the waiting filter
  /edit principle N prefer|avoid|drop|confidence X   change a principle of the waiting round
  /memory TEXT [space=nb201] [task=cifar10] [k=5]   search the principle memory across tasks
  /compare [RUN]         this run against random search and REA on the same budget
  /plot [all|curve|filter|principles]                the run's figures
  /help                  this list (Ctrl-C stops a running search; Ctrl-D or /quit leaves)"""

COMMANDS = ("/run", "/continue", "/pause", "/status", "/principles", "/filter", "/approve", "/edit", "/memory",
            "/compare", "/plot", "/help", "/quit")

_BOOL = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False, "0": False}


def _kv(words: list[str], allowed: set[str], positional: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq:
            if positional and positional not in out:
                out[positional] = w
                continue
            raise ConfigError(f"{w!r}: write options as key=value ({', '.join(sorted(allowed))})")
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r}: use {', '.join(sorted(allowed))}")
        out[key] = _BOOL.get(value.lower(), value) if key == "approve" else value
    return out


def parse_slash(text: str) -> tuple[str, Args]:
    """A slash command -> (action name, validated arguments); ConfigError with a one-line hint."""
    try:
        words = shlex.split(text.strip())
    except ValueError as exc:
        raise ConfigError(f"cannot read that command ({exc}); /help lists the commands") from None
    cmd, rest = words[0].lower(), words[1:]
    try:
        if cmd == "/run":
            return "start_run", StartRun(**_kv(rest, set(StartRun.model_fields), positional="target"))
        if cmd in ("/continue", "/status", "/filter", "/compare"):
            name = {"/continue": "continue_run", "/status": "status", "/filter": "show_filter", "/compare": "compare"}[cmd]
            return name, RunRef(**_run_kw(rest))
        if cmd == "/pause":
            return "pause_run", NoArgs()
        if cmd == "/principles":
            if rest and rest[0].isdigit():
                return "explain_principle", Explain(number=int(rest[0]), **_run_kw(rest[1:]))
            return "show_principles", RunRef(**_run_kw(rest))
        if cmd == "/approve":
            if not rest:
                return "approve_filter", Approval()
            if len(rest) == 1 and rest[0].lower() in _BOOL:
                return "approve_filter", Approval(on=_BOOL[rest[0].lower()])
            raise ConfigError("use /approve, /approve on or /approve off")
        if cmd == "/edit":
            return _parse_edit(rest)
        if cmd == "/memory":
            kv = {w.partition("=")[0]: w.partition("=")[2] for w in rest if "=" in w and w.partition("=")[0] in ("space", "task", "k")}
            text = " ".join(w for w in rest if not ("=" in w and w.partition("=")[0] in ("space", "task", "k")))
            if not text:
                raise ConfigError("give something to search for: /memory image classification with many classes")
            return "query_memory", MemoryQuery(text=text, **kv)
        if cmd == "/plot":
            kw = _kv(rest, {"kind", "run_id", "run"}, positional="kind")
            if "run" in kw:
                kw["run_id"] = kw.pop("run")
            return "plot", Plot(**kw)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(f"{cmd}: {'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']} (/help shows the form)") from None
    raise ConfigError(f"unknown command {cmd}: /help lists the commands")


def _run_kw(words: list[str]) -> dict[str, Any]:
    kw = _kv(words, {"run_id", "run"}, positional="run_id")
    if "run" in kw:
        kw["run_id"] = kw.pop("run")
    return kw


def _parse_edit(rest: list[str]) -> tuple[str, Args]:
    if not rest or rest[0] not in ("filter", "principle"):
        raise ConfigError("use /edit filter POSITION=CHOICE[,CHOICE] or /edit principle N prefer|avoid|drop|confidence X")
    if rest[0] == "filter":
        if len(rest) < 2:
            raise ConfigError("name what to allow: /edit filter edge3<-2=skip_connect,nor_conv_3x3")
        choices = {}
        for w in rest[1:]:
            pos, eq, cs = w.partition("=")
            if not eq or not cs:
                raise ConfigError(f"{w!r}: write POSITION=CHOICE[,CHOICE], e.g. edge3<-2=skip_connect")
            choices[pos] = [c for c in cs.split(",") if c]
        return "edit_filter", EditFilter(choices=choices)
    if len(rest) < 3 or not rest[1].isdigit():
        raise ConfigError("use /edit principle N prefer|avoid|drop|confidence X (/principles numbers them)")
    action = rest[2].lower()
    if action not in ("prefer", "avoid", "drop", "confidence"):
        raise ConfigError(f"{rest[2]!r}: use prefer, avoid, drop or confidence X")
    conf = None
    if action == "confidence":
        try:
            conf = float(rest[3])
        except (IndexError, ValueError):
            raise ConfigError("give the confidence as a number from 0 to 1: /edit principle 2 confidence 0.3") from None
    return "edit_principle", EditPrinciple(number=int(rest[1]), action=action, confidence=conf)


def slash(chat: ChatSession, text: str) -> Answer:
    """Run a slash command; never raises for bad input."""
    head = text.strip().split(maxsplit=1)[0].lower() if text.strip() else "/help"
    if head in ("/help", "/?", "/"):
        return Answer(HELP)
    try:
        name, args = parse_slash(text)
    except ArchloreError as exc:
        return Answer(f"error: {' '.join(str(exc).split())}")
    try:
        return ACTIONS[name].fn(chat, args)
    except (ArchloreError, ValueError) as exc:
        return Answer(f"error: {' '.join(str(exc).split())}")
