"""The nodes of the agent graph: plain functions `(state, runtime) -> partial update`.

What a node decides for the record (principles, filters, events) goes to the run's journal in the
ledger, not into the state, so a checkpoint stays small however long the run is. Search is
idempotent under resume: it evaluates until the evaluations used reach `next_check`, proposals are
seeded by (seed, evaluations so far) and finished evaluations come from the ledger, so a node
re-run after a kill continues exactly where the killed one stopped.
"""

from __future__ import annotations

import logging
from typing import Literal

from archlore.memory.record import Outcome, Principle, TaskInfo
from archlore.tools.errors import ArchloreError
from archlore.tools.evidence import Evidence
from archlore.tools.pareto import ParetoProposer
from archlore.tools.rank import RankSearch, Surrogate
from archlore.tools.spaces import SpaceFilter
from archlore.tools.strategies import REA, GuidedREA, RandomSearch, run_search
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from . import analyst, planner
from .context import RunContext
from .principles import principle_weights, render_evidence
from .ranker import LLMChooser
from .state import State
from .tuning import TUNING

log = logging.getLogger(__name__)


def _principles(raw: list[dict] | None) -> list[Principle]:
    return [Principle(**p) for p in raw or []]


def recall(state: State, runtime: Runtime[RunContext]) -> dict:
    """Round 0's evidence (the source's statistics, computed once here) and the recalled principles.

    With `recall_same_task` off (benchmarks), recall excludes every principle whose provenance
    includes the target's data, whatever task name it was stored under: what the target's own data
    taught must not come back as a prior. On (a user's default), earlier runs on the same task are
    recalled too, and each recalled principle's `data_tasks` shows it.
    """
    ctx = runtime.context
    ev = _cost_evidence(ctx, analyst.source_evidence(ctx), ctx.source.all_cells(ctx.settings.source) if ctx.source and ctx.settings.source else [])
    update: dict = {"evidence": ev.to_json() if ev else None, "recalled": []}
    if ctx.memory is None:
        return update
    s = ctx.settings
    evidence_text = render_evidence(ev.stats) if ev else ""
    same = s.recall_same_task
    try:
        found = ctx.memory.recall(
            ctx.space.name, f"{s.target}: {task_text(ctx)}", evidence_text,
            k=10, exclude_tasks=[] if same else [s.target], exclude_data=[] if same else [s.target],
            resolve_conflicts=True,
        )
    except Exception as exc:  # noqa: BLE001 - a broken memory must not end a run
        log.warning("memory recall failed: %s", exc)
        ctx.journal(0, "recall", event=[{"event": "memory_error", "node": "recall", "round": 0, "error": str(exc)[:300]}])
        return update
    update["recalled"] = [
        {
            "principle": r.principle.model_dump(),
            "task": r.task.task,
            "data_tasks": sorted(getattr(r, "data_tasks", ()) or ()),
            "conflicts": bool(r.conflicts),
            "run_id": r.run_ids[0] if r.run_ids else "",
            "run_ids": list(r.run_ids),
            "similarity": round(float(r.similarity), 4),
            "score": round(float(r.score), 4),
        }
        for r in found
    ]
    ctx.emit(kind="recall", n=len(update["recalled"]))
    return update


def _evidence(state: State) -> Evidence | None:
    raw = state.get("evidence")
    return Evidence.from_json(raw) if raw else None


def analyze(state: State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    mode = state.get("mode", "initial")
    ctx.new_round(state.get("round", 0))  # the round's first node: every role's chain starts at its head
    if ctx.settings.strategy == "rank":  # LM-Searcher alone: no principles, no analyst call
        return {"principles": [], **({"original_principles": []} if mode == "initial" else {})}
    res = analyst.analyze(
        ctx, mode, _principles(state.get("principles")), _principles(state.get("original_principles")),
        _evidence(state), state.get("recalled", []),
    )
    dumps = [p.model_dump() for p in res.principles]
    rnd = state.get("round", 0)
    ctx.journal(
        rnd, "analyze",
        principles=[{"round": rnd, "mode": mode, "by": res.by, "evidence": res.evidence_source,
                     "principles": dumps, "rejected": res.rejected}],
        event=[{**e, "round": rnd} for e in res.events],
    )
    update: dict = {"principles": dumps, "tokens": {"analyze": res.usage.to_dict()}}
    if mode == "initial":
        update["original_principles"] = dumps
    ctx.emit(kind="principles", mode=mode, n=len(dumps), last=dumps[0]["text"] if dumps else "")
    return update


def plan(state: State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    rnd = state.get("round", 0)
    if ctx.settings.strategy == "rank":  # LM-Searcher alone: the whole space, no planner call
        flt = ctx.space.full_filter()
        ctx.journal(rnd, "plan", filter=[{"round": rnd, "how": "whole space (strategy rank)", "size": flt.size(),
                                          "widened": False, "allowed": flt.names(ctx.space), "note": ""}])
        return {"filter": flt.to_json()}
    res = planner.plan(ctx, _principles(state.get("principles")), _evidence(state), ctx.evaluator.remaining)
    flt = res.filter
    ctx.journal(
        rnd, "plan",
        filter=[{"round": rnd, "how": res.how, "size": flt.size(), "widened": res.widened,
                 "allowed": flt.names(ctx.space), "note": res.note}],
        event=[{**e, "round": rnd} for e in res.events],
    )
    ctx.emit(kind="filter", size=flt.size(), how=res.how)
    return {"filter": flt.to_json(), "tokens": {"plan": res.usage.to_dict()}}


def approve(state: State, runtime: Runtime[RunContext]) -> dict:
    """A person approves or edits the planner's filter before evaluations are spent.

    Only when the run's settings ask for it (chat runs); automated runs pass straight through.
    The interrupt is the node's first effect, so re-running the node on resume repeats nothing.
    The answer: `{"action": "approve"}`, or `{"action": "edit", "filter": {position: [choices]},
    "principles": [Principle dumps]}` (either key may be left out). An edit that does not fit the
    space keeps the planner's filter and is recorded as rejected.
    """
    ctx = runtime.context
    if not ctx.settings.approve:
        return {}
    rnd = state.get("round", 0)
    flt = SpaceFilter(tuple(tuple(a) for a in state["filter"]))
    allowed = flt.names(ctx.space)
    answer = interrupt({
        "kind": "approve_filter", "run_id": ctx.settings.run_id, "round": rnd, "size": flt.size(),
        "allowed": allowed, "principles": list(dict.fromkeys(p.get("text", "") for p in state.get("principles") or [])),
    })
    answer = answer if isinstance(answer, dict) else {"action": str(answer)}
    update: dict = {}
    entries: dict[str, list[dict]] = {"event": []}
    edits = answer.get("filter") or {}
    try:
        if edits:
            new = SpaceFilter.from_choices(ctx.space, [edits.get(p.name, allowed[p.name]) for p in ctx.space.positions])
            if new != flt:
                update["filter"] = new.to_json()
                entries["filter"] = [{"round": rnd, "how": "person", "size": new.size(), "widened": False,
                                      "allowed": new.names(ctx.space), "note": answer.get("note", "")}]
        if answer.get("principles") is not None:
            dumps = [Principle(**p).model_dump() for p in answer["principles"]]
            update["principles"] = dumps
            entries["principles"] = [{"round": rnd, "mode": "edited", "by": "person", "evidence": "person",
                                      "principles": dumps, "rejected": []}]
    except (ArchloreError, ValueError, TypeError) as exc:
        update = {}
        entries = {"event": [{"event": "edit_rejected", "node": "approve", "round": rnd, "error": str(exc)[:300]}]}
    else:
        entries["event"].append({"event": "edited" if update else "approved", "node": "approve", "round": rnd,
                                 "by": "person", "changed": sorted(update)})
    ctx.journal(rnd, "approve", **entries)
    ctx.emit(kind="approved", round=rnd, edited=sorted(update))
    return update


def _metric_text(ctx: RunContext) -> str:
    """What the stored best metric is; a lower-is-better target's is stored negated (higher is
    better everywhere in the memory, so outcomes rank the same way) and says so."""
    table = getattr(ctx.evaluator.executor, "table", None)
    if table is not None and ctx.settings.target in table.lower_is_better:
        return f"{ctx.settings.target}, lower is better (best_metric stored negated)"
    return "validation accuracy"


def memory_task(s) -> str:
    """The task a run's principles are stored under: the target, or for a Pareto run the target
    tagged with its trade-off (`cifar100/pareto:flops`), so trade-off principles stay apart from
    accuracy ones and a Pareto run's recall finds them first (their description names it)."""
    return f"{s.target}/pareto:{'+'.join(s.objectives[1:])}" if s.objectives else s.target


def task_text(ctx: RunContext) -> str:
    """The target's description for the memory; a Pareto run's says which trade-off it searched,
    so its principles are stored under, and recalled by, that trade-off."""
    objectives = ctx.settings.objectives
    if not objectives:
        return ctx.target_description
    return f"{ctx.target_description} (Pareto trade-off: {' vs '.join(objectives)})"


def _cost_names(ctx: RunContext) -> list[str]:
    s = ctx.settings
    return list(dict.fromkeys(n for n in (*s.limits, *s.objectives[1:]) if n != s.target))


def _cost_evidence(ctx: RunContext, ev: Evidence | None, cells) -> Evidence | None:
    """With a cost limit or a cost objective, the evidence also says what each choice costs."""
    if ev is None or ctx.cost is None or not cells or not _cost_names(ctx):
        return ev
    return ev.with_costs(ctx.space, cells, [ctx.cost.cost_of(a) for a, _ in cells], _cost_names(ctx))


def with_costs(ctx: RunContext, principles: list[Principle]) -> list[Principle]:
    """With a cost limit or a cost objective, each principle's evidence also says what its choice
    costs among this run's evaluated cells ("mb_k5_e6 at layer3 costs +38% flops for +0.40 points"),
    so the memory keeps the trade-off, not only the accuracy."""
    if ctx.cost is None or not principles:
        return principles
    from archlore.tools.evidence import cost_effects

    names = [n for n in (*ctx.settings.limits, *ctx.settings.objectives[1:]) if n != ctx.settings.target]
    pairs = ctx.evaluator.pairs()
    effects = cost_effects(ctx.space, pairs, [ctx.cost.cost_of(a) for a, _ in pairs], list(dict.fromkeys(names)))
    by_key: dict[tuple[str, str], list[str]] = {}
    for e in effects:
        by_key.setdefault((e.position, e.choice), []).append(e.sentence())
    out = []
    for p in principles:
        said = "; ".join(by_key.get((p.position, p.choice), []))
        out.append(p.model_copy(update={"evidence": f"{p.evidence}; cost: {said}"[:400]}) if said else p)
    return out


def make_proposer(ctx: RunContext, principles: list[Principle], on_pick=None):
    """The search step's proposer; for rank strategies, also the LLM chooser (None with --llm none)."""
    s = ctx.settings
    if s.strategy == "random":
        return RandomSearch()
    if s.strategy == "rea":
        return REA(s.population, s.tournament)
    weights = principle_weights(ctx.space, principles)
    if s.strategy in {"rank", "guided-rank"}:
        llm = ctx.llm_for("ranker") if hasattr(ctx, "llm_for") else ctx.llm
        chooser = LLMChooser(llm, ctx.space) if llm is not None else None
        surrogate = Surrogate(weights=tuple(tuple(w) for w in weights) if s.strategy == "guided-rank" else None)
        return RankSearch(chooser, surrogate=surrogate, on_pick=on_pick, name=s.strategy)
    return GuidedREA(tuple(tuple(w) for w in weights), s.population, s.tournament, temperature=TUNING.guided_temperature)


def search(state: State, runtime: Runtime[RunContext]) -> dict:
    """The executor tool: evaluate inside the filter until the next check (or the budget)."""
    ctx = runtime.context
    ev = ctx.evaluator
    rnd = state.get("round", 0)
    principles = _principles(state.get("principles"))
    flt = SpaceFilter(tuple(tuple(a) for a in state["filter"]))
    target = min(ev.budget, state["next_check"])
    ranking = planner.rank_options(ctx.space, principles, None)

    def widen(f: SpaceFilter) -> SpaceFilter | None:
        wider = planner.widen(f, ranking, f.size() + 1)
        return wider if wider.size() > f.size() else None

    picks: list[dict] = []
    proposer = make_proposer(ctx, principles, on_pick=picks.append)
    rank = proposer if isinstance(proposer, RankSearch) else None  # its steps are recorded below
    if ctx.objectives is not None:  # Pareto mode: the fitness strategies see is the non-domination rank
        proposer = ParetoProposer(proposer, ctx.objectives)
    def on_eval(e: object) -> None:
        best = ev.best()  # None while every candidate so far failed
        ctx.emit(kind="eval", used=ev.used, budget=ev.budget, best=best.valid if best else None, arch=getattr(e, "arch", ""))

    update: dict = {}
    events = []
    if ctx.settings.executor == "train" and ctx.settings.fidelity:
        out, halving = _halving_step(ctx, proposer, flt, rnd, target - ev.used, widen, on_eval)
        if halving is not None:
            events.append({"event": "successive_halving", "node": "search", "round": rnd, **halving})
    else:
        batch = ctx.settings.concurrency if ctx.settings.executor == "train" and ctx.settings.concurrency > 1 else None
        out = run_search(
            proposer, ev, flt, target - ev.used, seed=ctx.settings.seed, proposed_by=f"{proposer.name}/r{rnd}",
            round=rnd, widen=widen, on_eval=on_eval, **({"batch": batch} if batch else {}),
        )
    if rank is not None:
        chooser = rank.choose
        calls = iter(chooser.calls if chooser is not None else [])
        for p in picks:  # one record per step: the pool, the surrogate's pick and the choice
            call = next(calls, {}) if chooser is not None and len(p["pool"]) > 1 else {"how": "surrogate"}
            events.append({**call, "event": "rank_choice", "node": "search", "round": rnd, **p,
                           "changed": p["chosen"] != p["surrogate"]})
        if chooser is not None:
            update["tokens"] = {"rank": chooser.usage.to_dict()}
    if out.filter != flt:
        update["filter"] = out.filter.to_json()
        events.append({"event": "widened", "node": "search", "round": rnd, "from": flt.size(), "to": out.filter.size()})
    ctx.journal(rnd, "search", event=events)
    if out.stopped == "exhausted":
        update["stopped"] = "exhausted"
    return update


def _halving_step(ctx: RunContext, proposer, flt: SpaceFilter, rnd: int, n: int, widen, on_eval):
    """--fidelity: this step's `n` candidates, then successive halving on epochs over them
    (tools/fidelity.py). Every rung's result is in the ledger with its epochs; a candidate costs
    one evaluation however far it climbs.

    The batch is proposed like a cluster's (each proposal sees the pending ones at the worst
    value so far, the "constant liar") and written to the journal before anything is trained,
    so a step re-run after a kill trains the same candidates and takes every finished rung from
    the ledger: the budget stays exact.
    """
    from archlore.tools.errors import BudgetExhausted
    from archlore.tools.fidelity import successive_halving
    from archlore.tools.strategies import SearchOutcome

    ev, s = ctx.evaluator, ctx.settings
    space = ctx.space
    planned = [b for b in ev.ledger.journal(s.run_id, "batch") if b.get("round") == rnd]
    if planned:
        archs = [space.from_string(a) for a in planned[-1]["archs"]]
        flt = SpaceFilter(tuple(tuple(a) for a in planned[-1]["filter"]))
        exhausted = planned[-1].get("exhausted", False)
    else:
        archs, flt, exhausted = _propose_batch(proposer, ev, flt, min(n, ev.remaining), s.seed, widen)
        ev.ledger.write_journal(s.run_id, rnd, "search-batch", {"batch": [
            {"round": rnd, "archs": [space.to_string(a) for a in archs], "filter": flt.to_json(), "exhausted": exhausted}]})
    if not archs:
        return SearchOutcome(0, "exhausted" if exhausted else "budget", flt), None
    before = ev.used
    try:
        res = successive_halving(ev, archs, min_epochs=s.min_epochs, max_epochs=s.rungs()[-1], eta=s.eta,
                                 proposed_by=f"{proposer.name}/r{rnd}", round=rnd, on_eval=on_eval)
    except BudgetExhausted:
        return SearchOutcome(0, "budget", flt), None
    done = ev.used - before
    halving = {**res.to_dict(), "best": res.best.arch if res.best else None}
    return SearchOutcome(done, "exhausted" if exhausted else "done", flt), halving


def _propose_batch(proposer, ev, flt: SpaceFilter, k: int, seed: int, widen):
    """`k` new candidates inside `flt` (widened when it runs out), proposed one by one with the
    pending ones in the history at the worst value so far; (archs, filter, exhausted)."""
    from archlore.tools.errors import SpaceExhausted
    from archlore.tools.spaces import sample_unseen
    from archlore.tools.strategies import step_rng

    space = ev.space
    history = list(ev.pairs())
    liar = min((v for _, v in history), default=0.0)
    known = {tuple(a) for a, _ in history}
    history += [(tuple(a), liar) for a in ev.seen() if tuple(a) not in known]  # failed ones too: never again
    taken = {tuple(a) for a, _ in history}
    feasible = getattr(ev.executor, "feasible", None) or getattr(getattr(ev.executor, "inner", None), "feasible", None)
    picks: list[tuple[int, ...]] = []
    while len(picks) < k:
        rng = step_rng(seed, len(history))
        try:
            arch = tuple(proposer.propose(space, history, flt, rng))
            if arch in taken:
                arch = tuple(sample_unseen(space, rng, taken, flt))
            if feasible is not None and not feasible(arch):  # over a cost limit: never trained, never again
                taken.add(arch)
                history.append((arch, liar))
                continue
        except SpaceExhausted:
            if picks:
                break
            wider = widen(flt) if widen else None
            if wider is None or wider.size() <= flt.size():
                return picks, flt, True
            flt = wider.check(space)
            continue
        picks.append(arch)
        taken.add(arch)
        history.append((arch, liar))
    return picks, flt, False


def assess(state: State, runtime: Runtime[RunContext]) -> dict:
    """LAPT's adaptation rule: improved -> update the principles; stalled -> branch from the originals."""
    ctx = runtime.context
    ev = ctx.evaluator
    best = ev.best()
    if ev.remaining <= 0 or state.get("stopped") == "exhausted" or not ev.history:
        return {"done": True}
    if best is None:  # every candidate so far failed (recorded with its reason): search on, same principles
        return {"mode": "branch", "round": state.get("round", 0) + 1, "next_check": ev.used + ctx.settings.check_every}
    prev = state.get("best_at_check")
    improved = prev is None or best.valid > prev
    return {
        "mode": "update" if improved else "branch",
        "round": state.get("round", 0) + 1,
        "next_check": ev.used + ctx.settings.check_every,
        "best_at_check": best.valid,
        "evidence": _cost_evidence(ctx, analyst.run_evidence(ctx), ctx.evaluator.pairs()).to_json(),  # the next round's, computed once here
    }


def route_after_assess(state: State) -> Literal["analyze", "remember"]:
    return "remember" if state.get("done") else "analyze"


def remember(state: State, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    if ctx.memory is None or not ctx.settings.remember or not ctx.evaluator.history:
        return {"remembered": []}
    s = ctx.settings
    best = ctx.evaluator.best()
    # what the run taught: the choices its best cells share (the adaptation rounds' principles
    # describe contrasts inside ever narrower filters, which mislead a later task)
    cells, label = ctx.evaluator.pairs(), f"{s.target} (run {s.run_id})"
    if ctx.objectives is not None:  # Pareto mode: what the front's cells share is the trade-off's lesson
        cells = ParetoProposer(None, ctx.objectives).fitness(cells)
        label = f"the {' vs '.join(s.objectives)} front of {s.target} (run {s.run_id})"
    lesson = with_costs(ctx, analyst.summary_principles(ctx.space, cells, s.top_k, label))
    # provenance: the target's own evaluations, the source that shaped which cells were evaluated,
    # and whatever data the recalled principles came from
    data_tasks = {s.target, *([s.source] if s.source else [])}
    for r in state.get("recalled", []):
        data_tasks.update(r.get("data_tasks") or ["unknown"])
    try:
        ids = ctx.memory.remember(
            lesson or _principles(state["principles"]),
            TaskInfo(space=ctx.space.name, task=memory_task(s), description=task_text(ctx),
                     metric=f"pareto: {', '.join(s.objectives)}" if s.objectives else _metric_text(ctx)),
            Outcome(best_metric=best.valid if best else None, evaluations=ctx.evaluator.used),
            s.run_id,
            data_tasks=sorted(data_tasks),
        )
    except Exception as exc:  # noqa: BLE001 - the evaluations are safe; report and go on
        log.warning("memory write failed: %s", exc)
        ctx.journal(state.get("round", 0), "remember", event=[{"event": "memory_error", "node": "remember", "round": state.get("round", 0), "error": str(exc)[:300]}])
        return {"remembered": []}
    return {"remembered": list(ids), "remembered_data_tasks": sorted(data_tasks)}
