"""The `archlore` command line: run agents, show runs, benchmark strategies, query the memory."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from archlore.tools.errors import ArchloreError, ConfigError
from rich.live import Live
from rich.markup import escape
from rich.table import Table as RichTable

app = typer.Typer(
    help="archlore: LLM agents that learn architecture design principles and transfer them across tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
from .cli_bench import bench, experiment_app
from .cli_chat import chat, sessions, ui
from .cli_common import console, err
from .cli_common import fail as _fail
from .cli_train import export, train
from .runs_cli import runs

# `archlore --help` groups the commands: a search and its results first, then chat, benchmarks
# and memory (registered at the end of this module, after `run` and `show`)
SEARCH, CHAT, BENCH = "Search and its results", "Chat", "Benchmarks"


def _mount_memory() -> None:
    try:
        from .cli_memory import memory_app
    except ImportError:  # pragma: no cover - the memory extra is part of the base install
        return
    app.add_typer(memory_app, name="memory", rich_help_panel="Memory",
                  help="Query and manage the principle memory (list, show, query, export, import, forget, migrate).")


class _Progress:
    """A live panel: round, evaluations used, best so far, filter size, last principle."""

    def __init__(self, budget: int) -> None:
        self.state = {"round": 0, "used": 0, "budget": budget, "best": None, "filter": None, "principle": "", "how": ""}
        self.live = Live(self._render(), console=err, refresh_per_second=8, transient=False)

    def _render(self) -> RichTable:
        s = self.state
        t = RichTable.grid(padding=(0, 2))
        t.add_row("round", str(s["round"]), "evaluations", f"{s['used']}/{s['budget']}")
        t.add_row("best so far", "-" if s["best"] is None else f"{s['best']:.4f}",
                  "filter size", "-" if s["filter"] is None else f"{s['filter']} ({s['how']})")
        t.add_row("last principle", (s["principle"] or "-")[:110], "", "")
        return t

    def __call__(self, ev: dict) -> None:
        kind = ev.get("kind")
        if kind == "eval":
            self.state.update(used=ev["used"], best=ev["best"], budget=ev["budget"])
        elif kind == "filter":
            self.state.update(filter=ev["size"], how=ev["how"])
        elif kind == "principles":
            self.state["principle"] = ev.get("last", "")
            if ev.get("mode") != "initial":
                self.state["round"] += 1
        self.live.update(self._render())


@app.command(rich_help_panel=SEARCH)
def run(
    space: Annotated[Optional[str], typer.Option(help="nb201, tnb101, or a .yaml/.json space file  [default: nb201]")] = None,
    target: Annotated[Optional[str], typer.Option(help="target task (dataset or table column), e.g. cifar100 or digits  [default: cifar100; a one-task --table: its task]")] = None,
    source: Annotated[Optional[str], typer.Option(help="source task the principles are learned from; 'none' for no source  [default: cifar10; with --table: none]")] = None,
    budget: Annotated[Optional[int], typer.Option(help="evaluations (unique architectures) to spend  [default: 20]")] = None,
    llm: Annotated[Optional[str], typer.Option(help="none | local | openai:MODEL[@BASE_URL], a fallback chain A>B>none, or per role: analyst=openai:gpt-4o-mini>local>none,planner=local,default=none (roles: analyst, planner, ranker, coordinator)  [default: none]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="[default: 0]")] = None,
    executor: Annotated[Optional[str], typer.Option(help="tabular (look up a benchmark table) or train (train each candidate)  [default: tabular]")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="the search step: guided-rea, rea, random or guided-rank inside the planner's filters; rank alone over the whole space (no analyst/planner)  [default: guided-rea]")] = None,
    data: Annotated[Optional[str], typer.Option(help="benchmark data dir (default $ARCHLORE_DATA, else ../shared/data)")] = None,
    table: Annotated[Optional[str], typer.Option(help="a CSV of results for a user space (encoding column 'arch')")] = None,
    memory: Annotated[Optional[str], typer.Option(help="principle memory: a path, an http:// Chroma server, or 'off' (default: the per-user store)")] = None,
    embedding: Annotated[Optional[str], typer.Option(help="memory embedding: minilm or hash  [default: minilm]")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="name of the run: letters, digits, '.', '_', '-' (default: derived from the settings and time)")] = None,
    resume: Annotated[Optional[str], typer.Option(help="continue the run with this id (after a crash or kill); takes only --runs-dir, --out and -q")] = None,
    out: Annotated[Optional[Path], typer.Option(help="also write the run record to this JSON file")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="where runs live (default $ARCHLORE_RUNS, else ./runs)")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="evaluations before the first check (LAPT: 5 nb201, 10 tnb101)")] = None,
    check_every: Annotated[Optional[int], typer.Option(help="evaluations between adaptation checks")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="top cells of this task fed back to the analyst")] = None,
    max_choices: Annotated[Optional[int], typer.Option(help="at most this many choices per position (LAPT: 2 nb201, 3 tnb101)")] = None,
    task_description: Annotated[Optional[str], typer.Option(help="a sentence describing the target task (for recall)")] = None,
    train_epochs: Annotated[Optional[int], typer.Option(help="epochs per candidate with --executor train (overrides the recipe's)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="--executor train: digits, cifar10, cifar100, imagenet16-120, folder:PATH (one sub-folder per class) or npz:PATH (x, y)  [default: digits, or the --target if it names one]")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="where cifar10/cifar100/imagenet16-120 live; CIFAR is downloaded there when missing  [default: ./data]")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="seed of the train/valid/test split (recorded; the search sees only valid)  [default: 0]")] = None,
    model: Annotated[Optional[str], typer.Option(help="how a candidate becomes a network: nb201, darts, cnn, mlp or your package.module:function(arch, shape, **options)  [default: the space's: its file's model: entry, else by its positions]")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="training recipe: proxy, nb201-12, nb201-200, darts, darts-proxy, or a YAML file  [default: proxy]")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="candidates trained at once (several small ones share a GPU)  [default: 1]")] = None,
    fidelity: Annotated[Optional[bool], typer.Option("--fidelity/--no-fidelity", help="successive halving on epochs: each search step trains its candidates for --min-epochs, keeps the best 1/--eta for more, up to --max-epochs  [default: off]")] = None,
    min_epochs: Annotated[Optional[int], typer.Option(help="--fidelity: epochs of the first rung  [default: 1]")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="--fidelity: epochs of the last rung  [default: the recipe's]")] = None,
    eta: Annotated[Optional[int], typer.Option(help="--fidelity: keep the best 1/eta of a rung  [default: 3]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N  [default: cuda when there is one]")] = None,
    count_failed: Annotated[Optional[bool], typer.Option("--count-failed/--no-count-failed", help="a candidate that fails (out of memory, NaN loss, builder error) costs one evaluation  [default: on]")] = None,
    tool_rounds: Annotated[Optional[int], typer.Option(help="analyst tool-calling rounds for evidence (default 1; 0 with --llm local, whose prompt carries the evidence pre-ranked)")] = None,
    llm_timeout: Annotated[Optional[float], typer.Option(help="seconds per LLM call (default 120; 600 with --llm local)")] = None,
    llm_retries: Annotated[Optional[int], typer.Option(help="retries on timeouts, connection errors, 429 and 5xx (default 4; 1 with --llm local)")] = None,
    llm_config: Annotated[Optional[Path], typer.Option(help="a YAML/JSON file: per role a backend chain and timeout, retries, temperature, max_tokens, prompt: write|choose (wins over --llm for the roles it names)")] = None,
    max_cost: Annotated[Optional[list[str]], typer.Option("--max", help="a cost limit NAME=VALUE (K/M/G suffixes), repeatable: --max params=1.0M --max flops=50M; cells over it are never evaluated")] = None,
    objective: Annotated[Optional[str], typer.Option(help="Pareto mode: the target then costs or metrics to trade off, e.g. accuracy,flops (the run returns the front)")] = None,
    recall_same_task: Annotated[Optional[bool], typer.Option("--recall-same-task/--no-recall-same-task", help="recall principles learned from earlier runs on this same task  [default: on; benchmarks: off]")] = None,
    storage: Annotated[Optional[str], typer.Option(help="shared run storage: sqlite:///FILE.db or postgresql://USER@HOST:PORT/DB (default $ARCHLORE_STORAGE, else a folder per run under --runs-dir); allowed with --resume")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="evaluate candidates as Ray tasks, a round's in parallel: local (start Ray here), auto or ray://HOST:PORT (join one); allowed with --resume  [default: in this process]")] = None,
    candidate_gpus: Annotated[Optional[float], typer.Option(help="GPUs per candidate with --cluster (0.25 packs four on a GPU)  [default: 1 when the cluster has GPUs]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Run the agents (analyst, planner, executor) on a target task."""
    from archlore.tools.constraints import parse_limits
    from archlore.tools.pareto import parse_objectives

    from .context import RunSettings
    from .runner import default_tasks, new_run_id, run_persistent, space_name

    given = {k: v for k, v in locals().items() if k not in {"resume", "out", "runs_dir", "quiet", "storage", "cluster", "RunSettings", "new_run_id", "run_persistent", "default_tasks", "space_name", "parse_limits", "parse_objectives"} and v is not None}
    try:
        _check_out(out)
        if resume:
            if given:
                raise ConfigError(
                    f"--resume continues run {resume!r} with its own settings; drop "
                    f"{', '.join('--' + k.replace('_', '-') for k in given)} (start a new run to change them)"
                )
            settings = RunSettings(run_id=resume, source=None)
        else:
            space = space or "nb201"
            tasks = default_tasks(space, table)
            if target is None and table and len(tasks) > 1:
                raise ConfigError(f"the table {table} has the tasks {', '.join(tasks)}: pick one with --target")
            if executor == "train" and target is None:  # the task is the data set (the old --target digits still works)
                from .runner import dataset_name

                dataset = given["dataset"] = dataset or "digits"
                target = dataset_name(dataset)
            target = target or (tasks[0] if tasks else "cifar100")
            # data paths kept absolute, so `--resume`, `train` and `export` work from any folder
            kind, _, where = (given.get("dataset") or "").partition(":")
            if kind in ("folder", "npz") and where and Path(where).expanduser().exists():
                given["dataset"] = f"{kind}:{Path(where).expanduser().resolve()}"
            if space.lower().endswith((".yaml", ".yml", ".json")) and Path(space).expanduser().is_file():
                space = str(Path(space).expanduser().resolve())
            if given.get("data_root"):
                given["data_root"] = str(Path(given["data_root"]).expanduser().resolve())
            # a user table's source is another of its columns: none unless asked for
            # cifar10 is a source only where archlore has its table (nb201, tnb101)
            builtin = space_name(space) in {"nb201", "tnb101"}
            src = ("cifar10" if not table and builtin else None) if source is None else (None if source in ("", "none") else source)
            options = {k: v for k, v in given.items()
                       if k not in {"space", "target", "source", "run_id", "max_cost", "objective"}}
            options.setdefault("recall_same_task", True)  # a user's own earlier runs on this task help
            if max_cost:
                options["limits"] = parse_limits(max_cost)
            if objective:
                options["objectives"] = parse_objectives(objective)
                if executor == "train" and options["objectives"][0] == "accuracy":  # a trained candidate's: the target's
                    options["objectives"][0] = target
            if llm_config:
                from .roles import load_config

                options["llm_config"] = load_config(llm_config)  # kept in settings.json: --resume needs no file
            settings = RunSettings(
                run_id=run_id or new_run_id({"space": space_name(space), "target": target, "seed": seed or 0}),
                space=space, target=target, source=src, **options,
            )
        from archlore.tools.env import env

        storage = storage or env().archlore_storage
        if storage:
            from archlore.tools.storage import parse_url

            parse_url(storage)  # a wrong form fails before the progress panel starts
        if cluster is not None:
            from archlore.tools.distributed import check_cluster

            settings.cluster = check_cluster(cluster)  # a resumed run takes it over its saved one

        def go(on_event: Any = None) -> tuple[dict, Any]:
            if storage:
                from archlore.tools.storage import redact

                from .stored import run_stored

                rec = run_stored(settings, storage=storage, resume=bool(resume), cluster=cluster, on_event=on_event)
                return rec, f"in {redact(storage)} (archlore show {settings.run_id} --storage ...)"
            rec, run_dir = run_persistent(settings, root=runs_dir, resume=bool(resume), on_event=on_event, cluster=cluster)
            return rec, run_dir / "record.json"

        progress = None if quiet else _Progress(settings.budget)
        if progress:
            with progress.live:
                record, where_record = go(progress)
        else:
            record, where_record = go()
        if out:
            _write_out(out, record)
    except ArchloreError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        rid = resume or settings.run_id
        where = f" --storage {storage}" if storage else f" --runs-dir {runs_dir}" if runs_dir else ""
        err.print(f"interrupted: finished evaluations are saved; continue with `archlore run --resume {rid}{where}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    _print_summary(record)
    console.print(f"record: {where_record}" + (f" and {out}" if out else ""), highlight=False)


def _check_out(out: Path | None) -> None:
    """Refuse an --out that cannot be written before the run spends anything."""
    if out is None:
        return
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory: give a file path, e.g. {out / 'record.json'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: {out.parent} is not a directory")


def _write_out(out: Path, record: dict) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write --out {out} ({exc.strerror or exc}); the record is safe in the run's folder"
        ) from None


def _print_summary(rec: dict) -> None:
    best = rec.get("best") or {}
    console.print(
        f"[bold]{escape(str(rec['run_id']))}[/]: "
        + escape(f"{rec['space']} {rec.get('source') or '-'} -> {rec['target']}, llm {_llm_label(rec)}, ")
        + f"{rec['used']}/{rec['budget']} evaluations, best valid {best.get('valid', float('nan')):.4f}"
        + (f", test {best['test']:.4f}" if best.get("test") is not None else "")
        + (f" ({rec['target']}: lower is better)" if rec.get("direction") == "min" else ""),
        highlight=False, soft_wrap=True,
    )
    if rec.get("evaluable") is not None:
        console.print(f"table: {rec['evaluable']} architectures have a result for {rec['target']}"
                      + (" within the limits" if rec.get("limits") else "") + "; a proposal without one is replaced by the nearest that has",
                      highlight=False, soft_wrap=True)
    if rec.get("limits"):
        from archlore.tools.constraints import format_limits

        console.print(f"limits: {format_limits(rec['limits'])} (no cell over a limit was evaluated)", highlight=False)
    if rec.get("objectives"):
        front = rec.get("front") or []
        console.print(f"Pareto front ({' vs '.join(rec['objectives'])}): {len(front)} of {rec['used']} evaluated cells",
                      highlight=False)


@app.command(rich_help_panel=SEARCH)
def show(
    run: Annotated[str, typer.Argument(help="a run id (under --runs-dir) or a record JSON file")],
    runs_dir: Annotated[Optional[Path], typer.Option(help="where runs live (default $ARCHLORE_RUNS, else ./runs)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw record")] = False,
    rounds: Annotated[bool, typer.Option("--rounds", help="print every round's principles and filter, not only the final ones")] = False,
    all_evals: Annotated[bool, typer.Option("--all", help="list every evaluation (default: all up to 30, else the best 10)")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw the run's figures (best-so-far vs baselines, filter grid, principle timeline) to this .png/.svg/.pdf")] = None,
    storage: Annotated[Optional[str], typer.Option(help="read the run from shared storage: sqlite:///FILE.db or postgresql://... (default $ARCHLORE_STORAGE)")] = None,
) -> None:
    """Print a run record readably: principles as a few statements, rounds, filters, evaluations, tokens."""
    from .principles import render_statements
    from .runner import check_run_id
    from .runner import runs_dir as default_runs

    from archlore.tools.env import env

    storage = storage or env().archlore_storage
    try:
        path = Path(run)
        if storage and not path.is_file():
            from archlore.tools.storage import RunStore

            from .stored import stored_record

            with RunStore(storage) as store:
                rec = stored_record(store, check_run_id(run))
        else:
            if not path.is_file():
                path = default_runs(runs_dir) / check_run_id(run) / "record.json"
            if not path.is_file():
                raise ArchloreError(f"no run record for {run!r} (looked for {path}); pass a run id or a record file")
            try:
                rec = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError) as exc:
                raise ArchloreError(f"cannot read {path}: {exc}") from None
            except json.JSONDecodeError as exc:
                raise ArchloreError(f"{path} is not valid JSON ({exc.msg}); the run may still be writing it") from None
            if not isinstance(rec, dict) or "run_id" not in rec or "evaluations" not in rec:
                raise ArchloreError(f"{path} is not an archlore run record")
    except ArchloreError as exc:
        _fail(exc)
    if plot is not None:
        from . import plots

        try:
            plots.save(rec, plot, baselines=plots.baseline_curves(rec))
            if rec.get("front"):  # a Pareto run: its evaluations and front beside the figure
                from archlore.benchmarks.plots import plot_front

                front_file = plot_front(rec, plot.with_name(f"{plot.stem}-front{plot.suffix}"))
                err.print(f"Pareto front: {front_file}", highlight=False)
        except ArchloreError as exc:
            _fail(exc)
        err.print(f"figure: {plot}", highlight=False)
    if as_json:
        console.print_json(data=rec)
        return
    _print_summary(rec)
    fed = rec.get("data_fed_to_analyst", {})
    console.print(f"analyst fed: {fed.get('source_cells') or 'no source table'}; target data: "
                  f"{fed.get('target_data') or '-'}", highlight=False, soft_wrap=True)
    _print_memory(rec)
    _print_training(rec)
    if rec.get("defaults"):
        console.print("defaults: " + "; ".join(f"{k.replace('_', '-')} {v}" for k, v in rec["defaults"].items()),
                      highlight=False, soft_wrap=True)
    _print_front(rec)
    history = rec.get("principles_history", [])
    filters = {f["round"]: f for f in rec.get("filters", [])}
    if history:
        last = history[-1]
        console.rule(f"principles after round {last['round']} ({last['mode']}, by {last['by']})")
        for i, line in enumerate(render_statements(rec.get("principles") or last["principles"]), 1):
            console.print(f"  {line}" if line.startswith("(+") else f"  {i}. {line}", highlight=False, markup=False)
        t = RichTable(title="rounds")
        for col in ("round", "mode", "by", "evidence", "effects", "rejected", "filter"):
            t.add_column(col)
        for h in history:
            f = filters.get(h["round"])
            t.add_row(str(h["round"]), h["mode"], h["by"], _evidence_label(h, rec), str(len(h["principles"])),
                      str(len(h.get("rejected", []))),
                      "-" if f is None else f"{f['size']} ({f['how']}{', widened' if f.get('widened') else ''})")
        console.print(t)
    if rounds:
        for h in history:
            console.rule(f"round {h['round']} · {h['mode']} · by {h['by']} · evidence: {_evidence_label(h, rec)}")
            for line in render_statements(h["principles"]):
                console.print(f"  {line}", highlight=False, markup=False)
            for r in h.get("rejected", []):
                console.print(f"  rejected: {r['reason']}", highlight=False, markup=False)
            f = filters.get(h["round"])
            if f:
                console.print("  filter: " + "; ".join(f"{k}: {'/'.join(v)}" for k, v in f["allowed"].items()),
                              highlight=False, markup=False)
    elif filters:
        f = filters[max(filters)]
        console.print(f"final filter ({f['size']} architectures): "
                      + "; ".join(f"{k}: {'/'.join(v)}" for k, v in f["allowed"].items()), highlight=False, markup=False)
    evals = rec.get("evaluations", [])
    shown = evals if all_evals or len(evals) <= 30 else sorted(
        evals, key=lambda e: (-e.get("fidelity", 0), -e["valid"] if e.get("valid") is not None else math.inf))[:10]
    trained = bool(rec.get("training"))
    t = RichTable(title="evaluations" if shown is evals else f"the best 10 of {len(evals)} evaluations (--all lists every one)")
    for col in ("#", "round", "arch", "valid", "test", *(("epochs",) if trained else ()), "proposed by"):
        t.add_column(col, overflow="fold")
    names = _choice_names(rec)
    for e in shown:
        valid = "failed" if e.get("valid") is None else f"{e['valid']:.4f}"
        t.add_row(str(e["seq"]), str(e["round"]), names(e["arch"]), valid, "-" if e.get("test") is None else f"{e['test']:.4f}",
                  *((str(e.get("fidelity", "-")),) if trained else ()), e["proposed_by"])
    console.print(t)
    events = rec.get("events", [])
    if events:
        counts: dict[str, int] = {}
        for e in events:
            key = f"{e['event']}@{e.get('node', '?')}"
            counts[key] = counts.get(key, 0) + 1
        console.print("events: " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in counts.items()), highlight=False)
    tot = rec.get("tokens", {}).get("total", {})
    console.print(f"LLM: {tot.get('calls', 0)} calls, {tot.get('input_tokens', 0)} in / {tot.get('output_tokens', 0)} out tokens, "
                  f"{tot.get('seconds', 0):.1f} s, ~${tot.get('cost_usd', 0):.4f}", highlight=False)
    _print_roles(rec)


def _llm_label(rec: dict) -> str:
    """The LLM of every role, or each role's chain where they differ (an --llm-config run's `llm` is not all)."""
    chains = rec.get("llm_roles") or {}
    if len(set(chains.values())) <= 1:
        return next(iter(chains.values()), rec.get("llm", "none"))
    return ",".join(f"{r}={c}" for r, c in chains.items() if c != "none") + ",default=none"


def _print_roles(rec: dict) -> None:
    """Each role's backend chain, its tokens, seconds and cost per backend, and the switches."""
    chains = rec.get("llm_roles") or {}
    per_role = rec.get("tokens", {}).get("per_role") or {}
    if not per_role and not rec.get("llm_switches") and all(c == "none" for c in chains.values()):
        return
    t = RichTable(title="LLM per role")
    for col in ("role", "chain", "backend", "calls", "tokens in/out", "seconds", "cost"):
        t.add_column(col, overflow="fold")
    for role, chain in chains.items():
        backends = (per_role.get(role) or {}).get("backends") or {}
        if not backends:
            t.add_row(role, chain, "-", "0", "-", "-", "-")
        for name, u in backends.items():
            t.add_row(role, chain, name, str(u.get("calls", 0)), f"{u.get('input_tokens', 0)}/{u.get('output_tokens', 0)}",
                      f"{u.get('seconds', 0):.1f}", f"${u.get('cost_usd', 0):.4f}")
    console.print(t)
    for sw in rec.get("llm_switches") or []:
        console.print(f"switch: round {sw.get('round')}, {sw.get('role')} {sw.get('from')} -> {sw.get('to')} "
                      f"at {sw.get('evaluations')} evaluations ({sw.get('node')}): {sw.get('reason')}",
                      highlight=False, markup=False, soft_wrap=True)


def _evidence_label(h: dict, rec: dict) -> str:
    """A round's evidence; round 0 with no source and nothing recalled had none (not "recalled principles")."""
    if h.get("evidence") == "recalled principles only" and not rec.get("recalled"):
        return "none (no source table, nothing recalled)"
    return str(h.get("evidence"))


def _print_front(rec: dict) -> None:
    front = rec.get("front") or []
    if not front:
        return
    names = rec.get("objectives") or []
    t = RichTable(title=f"Pareto front: {' vs '.join(names)} ({len(front)} cells)")
    for col in ("#", "arch", *names):
        t.add_column(col, overflow="fold")
    for f in front:
        t.add_row(str(f.get("seq", "")), f["arch"], *(f"{f[n]:.6g}" for n in names))
    console.print(t)


def _choice_names(rec: dict) -> Any:
    """arch -> how `show` prints it: a user space's digit string with its choices
    (`1011 (depth=2 width=4 kernel=5 activation=gelu)`) when the space file is still there and
    small; built-in spaces' strings (NB201's arch string, DARTS's genotype) as they are."""
    plain = lambda a: a  # noqa: E731
    path = (rec.get("settings") or {}).get("space")
    if not isinstance(path, str) or not path.lower().endswith((".yaml", ".yml", ".json")):
        return plain
    try:
        from archlore.tools.spaces import get_space

        space = get_space(path)
        if space.name != rec.get("space") or len(space.positions) > 12:
            return plain
    except (ArchloreError, OSError):
        return plain

    def named(a: str) -> str:
        try:
            return f"{a} ({' '.join(f'{k}={v}' for k, v in space.describe(space.from_string(a)).items())})"
        except (ArchloreError, ValueError):
            return a

    return named


def _print_training(rec: dict) -> None:
    """A training run: what was trained on what, how, the failed candidates and the best's test accuracy."""
    tr = rec.get("training")
    if not tr:
        return
    d, r, fid = tr.get("data") or {}, tr.get("recipe") or {}, tr.get("fidelity") or {}
    sizes = d.get("sizes") or {}
    console.print(
        f"training: builder {tr.get('builder')}{' ' + json.dumps(tr['model_options']) if tr.get('model_options') else ''} "
        f"on {d.get('name')} ({sizes.get('train')}/{sizes.get('valid')}/{sizes.get('test')} train/valid/test, "
        f"{d.get('split')}, split seed {d.get('split_seed')}, fingerprint {d.get('fingerprint')}); recipe {r.get('name')} "
        f"(hash {r.get('hash')}), " + (f"successive halving on epochs {' -> '.join(map(str, fid.get('rungs', [])))} (eta {fid.get('eta')})"
                                       if fid.get("successive_halving") else f"{fid.get('epochs')} epochs")
        + f", device {tr.get('device')}", highlight=False, markup=False, soft_wrap=True,
    )
    final = tr.get("final")
    if final:
        console.print(f"best: valid {final['valid']:.2f}% after {final['epochs']} epochs; its test accuracy {final['test']:.2f}% "
                      f"(the search saw validation accuracy only; `archlore train {rec['run_id']} --best` retrains it with "
                      "the full recipe over seeds)", highlight=False, markup=False, soft_wrap=True)
    failed = rec.get("failed") or []
    if failed:
        counted = "each counted against the budget" if tr.get("count_failed", True) else "not counted against the budget"
        console.print(f"failed candidates ({len(failed)}, {counted}):", highlight=False)
        for f in failed[:10]:
            console.print(f"  {f['arch']}: {f['reason']}", highlight=False, markup=False, soft_wrap=True)
        if len(failed) > 10:
            console.print(f"  ... and {len(failed) - 10} more (--json lists them)", highlight=False)


def _print_memory(rec: dict) -> None:
    """What the run took from the memory and left in it, with the data each came from."""
    recalled = rec.get("recalled", [])
    if recalled:
        runs = sorted({r.get("run_id", "") for r in recalled} - {""})
        data = sorted({t for r in recalled for t in r.get("data_tasks") or ["unknown"]})
        console.print(f"memory: recalled {len(recalled)} principles of {len(runs)} run(s) "
                      f"({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}); from data: {', '.join(data)}",
                      highlight=False, soft_wrap=True)
    else:
        console.print("memory: nothing recalled", highlight=False)
    kept = rec.get("remembered", [])
    if kept:
        console.print(f"memory: stored {len(kept)} principles for {rec['target']}; from data: "
                      f"{', '.join(rec.get('remembered_data_tasks') or ['-'])}", highlight=False, soft_wrap=True)


for _name, _command, _panel in (("runs", runs, SEARCH), ("train", train, SEARCH), ("export", export, SEARCH),
                                 ("chat", chat, CHAT), ("sessions", sessions, CHAT), ("ui", ui, CHAT),
                                 ("bench", bench, BENCH)):
    app.command(_name, rich_help_panel=_panel)(_command)
app.add_typer(experiment_app, name="experiment", rich_help_panel=BENCH)


def main() -> None:  # pragma: no cover - console entry
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:  # typer 0.2x vendors click; older typers use click itself
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover
        from click import exceptions as click_errors

    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except getattr(click_errors, "NoArgsIsHelpError", ()):  # the help was printed
        sys.exit(2)
    except click_errors.UsageError as exc:  # a wrong option type, an unknown option...
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}{where}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click_errors.ClickException as exc:
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("aborted", highlight=False)
        sys.exit(130)
    except ArchloreError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        import tempfile
        import traceback

        fd, path = tempfile.mkstemp(prefix="archlore-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc)[:200])} (a bug in archlore; "
                  f"the traceback is in {path})", highlight=False, soft_wrap=True)
        sys.exit(1)


_mount_memory()


if __name__ == "__main__":  # pragma: no cover - python -m archlore.agents.cli
    main()
