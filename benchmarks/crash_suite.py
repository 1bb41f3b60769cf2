"""The reliability suite: kill -9 `archlore run` at random moments, resume it, and check that
nothing is lost; then throw hostile options at the CLI and count tracebacks.

A run (`--llm none --memory off`, NB201 cifar100 <- cifar10) is started as a subprocess and
killed with SIGKILL at seeded random moments: when its ledger (`runs/<id>/ledger.db`) reaches a
chosen row count, or a chosen time after the process starts (which also hits start-up and the
final record write). After each kill, `archlore run --resume ID` continues it (or, when the kill
came before the run existed on disk, the first command runs again), and may itself be killed.
The final record's evaluation sequence must equal an uninterrupted run's with the same seed.

    python -m archlore.benchmarks.crash_suite --kills 50 --hostile 200 \\
        --out benchmarks/results/crash_suite.md

`tests/test_crash.py` runs a seeded handful of the same kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLI = [sys.executable, "-m", "archlore.agents.cli"]


def run_args(run_id: str, runs_dir: Path, data: Path, *, budget: int = 30, seed: int = 0) -> list[str]:
    return [
        "run", "--space", "nb201", "--target", "cifar100", "--source", "cifar10", "--budget", str(budget),
        "--seed", str(seed), "--llm", "none", "--memory", "off", "-q", "--data", str(data),
        "--runs-dir", str(runs_dir), "--run-id", run_id,
    ]


def resume_args(run_id: str, runs_dir: Path) -> list[str]:
    return ["run", "--resume", run_id, "-q", "--runs-dir", str(runs_dir)]


def ledger_rows(run_dir: Path) -> int:
    """Evaluations in a run's ledger, read-only (0 while the file does not exist yet)."""
    db = run_dir / "ledger.db"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def checkpoint_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.glob("checkpoints.db*"))


def evaluation_sequence(run_dir: Path) -> list[str]:
    return [e["arch"] for e in json.loads((run_dir / "record.json").read_text())["evaluations"]]


@dataclass
class Kill:
    """Kill when the ledger has `rows` evaluations, or `seconds` after the process started."""

    rows: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        return f"at {self.rows} rows" if self.rows is not None else f"at {self.seconds:.2f} s"


@dataclass
class Outcome:
    kills_planned: int = 0
    kills_landed: int = 0  # SIGKILL delivered while the process still ran
    restarts: int = 0
    sequence: list[str] = field(default_factory=list)
    checkpoint_bytes: int = 0
    log: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "500"}


def run_with_kills(
    run_id: str, runs_dir: Path, data: Path, kills: list[Kill], *, budget: int = 30, seed: int = 0,
    timeout: float = 300.0,
) -> Outcome:
    """Run once with the kills applied in order, resuming after each; return the final outcome."""
    out = Outcome(kills_planned=len(kills))
    run_dir = runs_dir / run_id
    pending = list(kills)
    deadline = time.monotonic() + timeout
    while True:
        exists = (run_dir / "settings.json").exists()
        args = resume_args(run_id, runs_dir) if exists else run_args(run_id, runs_dir, data, budget=budget, seed=seed)
        if exists:
            out.restarts += 1
        proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        started = time.monotonic()
        kill = pending.pop(0) if pending else None
        while kill is not None and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"run {run_id} did not finish in {timeout} s")
            due = (kill.rows is not None and ledger_rows(run_dir) >= kill.rows) or (
                kill.seconds is not None and time.monotonic() - started >= kill.seconds)
            if due:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode == -signal.SIGKILL:
            out.kills_landed += 1
            out.log.append(f"killed {kill} ({ledger_rows(run_dir)} rows on disk)")
            continue
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {stderr.strip()[-2000:]}")
        if kill is not None:
            out.log.append(f"kill {kill} came after the run finished")
        break
    out.sequence = evaluation_sequence(run_dir)
    out.checkpoint_bytes = checkpoint_bytes(run_dir)
    return out


def seeded_kills(rng: random.Random, n: int, budget: int, *, max_seconds: float = 3.0) -> list[Kill]:
    """`n` kill moments for one run, in the order they are applied.

    About three in four are ledger row counts, drawn without repeats and applied in increasing
    order, so each kill lands later in the run than the one before; the others are times after a
    process starts (0 to `max_seconds`: start-up, the first evaluations, or the end of a short
    resume), placed at random among them. A row count the resumed process has already passed kills
    it during start-up, which is a moment worth testing too.
    """
    n_time = sum(rng.random() < 0.25 for _ in range(n))
    rows = sorted(rng.sample(range(budget + 1), min(n - n_time, budget + 1)))  # budget: after the last one
    kills = [Kill(rows=r) for r in rows]
    for _ in range(n - len(rows)):
        kills.insert(rng.randint(0, len(kills)), Kill(seconds=round(rng.uniform(0.0, max_seconds), 3)))
    return kills


# ---------------------------------------------------------------------------------------------
# hostile CLI options
HOSTILE = {
    "--budget": ["-2", "-1", "0", "1", "3", "7", "x", "1e3", ""],
    "--seed": ["-1", "0", "7", str(2**31), str(2**63), str(-(2**63)), str(2**80), "abc"],
    "--target": ["cifar100", "cifar10", "imagenet16-120", "nope", "", "CIFAR100", " cifar100", "acc", "ü" * 50, "[/]", "[bold]x"],
    "--source": ["cifar10", "none", "", "cifar100", "nope", "imagenet16-120", "None"],
    "--space": ["nb201", "tnb101", "NB-201", "garbage", "missing.yaml", ".", "/", "x.json", "BADSPACE"],
    "--strategy": ["guided-rea", "rea", "random", "bogus", ""],
    "--executor": ["tabular", "bogus", ""],
    "--warmup": ["-1", "0", "1", "5", "99", str(2**63)],
    "--check-every": ["-1", "0", "1", "3", str(2**63)],
    "--top-k": ["-5", "0", "1", "5", "1000", str(2**63)],
    "--max-choices": ["-1", "0", "1", "2", "5", "99"],
    "--task-description": ["", "x" * 2000, "line\nbreak", "ü", "[/]"],
    "--run-id": ["ok", "", ".", "..", "a/b", "../escape", "x" * 300, "-", "ü", " ", "a b", "con"],
    "--llm-timeout": ["0", "-1", "1e9", "nan", "inf"],
    "--llm-retries": ["0", "-1", "3"],
    "--tool-rounds": ["-1", "0", "5"],
    "--train-epochs": ["-1", "0", "2"],
    "--data": ["DATA", "MISSING", "FILE", "/"],
    "--table": ["MISSING.csv", "FILE", "EMPTY.csv"],
    "--out": ["OUT/r.json", "OUT", "FILE/r.json"],
    "--runs-dir": ["RUNS", "FILE", "RUNS/deep/er"],
    "--resume": ["ghost", "", "..", "FINISHED"],
}


def hostile_args(rng: random.Random, tmp: Path, data: Path, finished: str, shared_runs: Path) -> list[str]:
    """A random mix of hostile options (always `--llm none --memory off -q`, small budgets).

    `tmp` is this case's folder; a case with `--resume` uses `shared_runs`, which holds the
    finished run `finished`.
    """
    chosen = rng.sample(sorted(HOSTILE), rng.choice([1, 1, 2, 2, 3, 5]))  # few at once: most reach the run
    runs = shared_runs if "--resume" in chosen else tmp / "runs"
    subs = {"DATA": str(data), "MISSING": str(tmp / "missing"), "FILE": str(tmp.parent / "a-file"),
            "EMPTY": str(tmp.parent / "empty"), "OUT": str(tmp.parent / "out"), "RUNS": str(runs),
            "FINISHED": finished}
    args = ["run", "--llm", "none", "--memory", "off", "-q"]
    for opt in chosen:
        value = rng.choice(HOSTILE[opt])
        for k, v in subs.items():
            value = value.replace(k, v) if value.startswith(k) else value
        args += [opt, value]
    if "--data" not in chosen:
        args += ["--data", str(data)]
    if "--runs-dir" not in chosen:
        args += ["--runs-dir", str(runs)]
    if "--budget" not in chosen:
        args += ["--budget", "4"]
    return args


@dataclass
class HostileReport:
    tried: int = 0
    ok: int = 0
    refused: int = 0  # exit 2 with one error line
    crashes: list[tuple[list[str], str]] = field(default_factory=list)  # a traceback, or an exit other than 0/2
    multi_line: list[tuple[list[str], str]] = field(default_factory=list)  # exit 2 but more than one line


def classify(args: list[str], code: int | None, stdout: str, stderr: str, exc: BaseException | None, rep: HostileReport) -> None:
    rep.tried += 1
    if exc is not None and not isinstance(exc, SystemExit):
        rep.crashes.append((args, f"{type(exc).__name__}: {exc}"[:300]))
    elif "Traceback" in stdout + stderr or code not in (0, 2):
        rep.crashes.append((args, f"exit {code}: {(stderr or stdout).strip()[-300:]}"))
    elif code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if len(lines) == 1 and lines[0].startswith("error:"):
            rep.refused += 1
        else:
            rep.multi_line.append((args, stderr.strip()[:300]))
    else:
        rep.ok += 1


def hostile_cli(n: int, data: Path, *, seed: int = 0, in_process: bool = True) -> HostileReport:
    """Run `n` hostile option sets (in-process through typer's CliRunner, or as subprocesses)."""
    rng = random.Random(seed)
    rep = HostileReport()
    with tempfile.TemporaryDirectory(prefix="archlore-hostile-") as t:
        tmp = Path(t)
        (tmp / "a-file").write_text("not a directory\n")
        (tmp / "empty.csv").write_text("")
        (tmp / "out").mkdir()
        finished = "done"
        subprocess.run(CLI + run_args(finished, tmp / "runs", data, budget=3), capture_output=True, env=_env(), check=True)
        if in_process:
            from typer.testing import CliRunner

            from archlore.agents.cli import app

            runner = CliRunner(env={"COLUMNS": "500"})
        for i in range(n):
            case = tmp / f"c{i}"
            case.mkdir()
            args = hostile_args(rng, case, data, finished, tmp / "runs")
            if in_process:
                res = runner.invoke(app, args, catch_exceptions=True)
                classify(args, res.exit_code, res.stdout, res.stderr, res.exception, rep)
            else:
                p = subprocess.run(CLI + args, capture_output=True, text=True, env=_env(), timeout=300)
                classify(args, p.returncode, p.stdout, p.stderr, None, rep)
    return rep


# ---------------------------------------------------------------------------------------------
def _code_version() -> str:
    """`, code at <commit>` of the archlore that runs, when it is a git checkout."""
    import archlore.agents

    where = Path(archlore.agents.__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f", code at {rev}{' + local changes' if dirty else ''}" if rev else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs to attempt in all")
    ap.add_argument("--kills-per-run", type=int, default=5)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--hostile", type=int, default=200, help="hostile CLI option sets to try")
    ap.add_argument("--subprocess", action="store_true", help="run hostile cases as subprocesses (slow)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.environ.get("ARCHLORE_DATA", str(Path(__file__).resolve().parents[1] / "../shared/data")))
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    a = ap.parse_args(argv)
    data = Path(a.data).resolve()
    rng = random.Random(a.seed)
    lines: list[str] = []
    say = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="archlore-crash-") as t:
        runs = Path(t) / "runs"
        base = run_with_kills("whole", runs, data, [], budget=a.budget, seed=a.seed)
        say(f"# Crash suite\n\nNB201 cifar100 <- cifar10, budget {a.budget}, seed {a.seed}, `--llm none --memory off`"
            f"{_code_version()}.\n")
        say(f"Uninterrupted run: {len(base.sequence)} evaluations, checkpoints {base.checkpoint_bytes / 1024:.0f} KiB.\n")
        say("| run | kills planned | landed | restarts | same sequence | checkpoints KiB |")
        say("|---|---|---|---|---|---|")
        planned = landed = survived = 0
        mismatches: list[str] = []
        sizes: list[int] = []
        r = 0
        while planned < a.kills:
            k = min(a.kills_per_run, a.kills - planned)
            kills = seeded_kills(rng, k, a.budget)
            o = run_with_kills(f"k{r}", runs, data, kills, budget=a.budget, seed=a.seed)
            same = o.sequence == base.sequence
            planned += k
            landed += o.kills_landed
            survived += o.kills_landed if same else 0
            sizes.append(o.checkpoint_bytes)
            if not same:
                mismatches.append(f"k{r}: {'; '.join(o.log)}")
            say(f"| k{r} | {k} | {o.kills_landed} | {o.restarts} | {'yes' if same else 'NO'} | {o.checkpoint_bytes / 1024:.0f} |")
            r += 1
        say(f"\nKills: {planned} planned, {landed} landed while the process ran, {survived} survived "
            f"(the resumed run's evaluation sequence equals the uninterrupted one); {len(mismatches)} runs differ.")
        if sizes:
            say(f"Checkpoint size after kills: {min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KiB "
                f"(uninterrupted {base.checkpoint_bytes / 1024:.0f} KiB).")
        for m in mismatches:
            say(f"- mismatch {m}")
    rep = hostile_cli(a.hostile, data, seed=a.seed, in_process=not a.subprocess)
    say(f"\nHostile CLI cases ({'subprocess' if a.subprocess else 'in-process CliRunner'}): {rep.tried} tried, "
        f"{rep.ok} ran, {rep.refused} refused with one error line, {len(rep.multi_line)} refused with more than one "
        f"line, {len(rep.crashes)} crashes (a traceback or an exit other than 0/2).")
    for args, what in rep.crashes[:20]:
        say(f"- crash: `archlore {' '.join(args)}` -> {what!r}")
    for args, what in rep.multi_line[:10]:
        say(f"- multi-line: `archlore {' '.join(args)}` -> {what!r}")
    say(f"\nWall time {time.monotonic() - t0:.0f} s; command: `python -m archlore.benchmarks.crash_suite "
        f"--kills {a.kills} --hostile {a.hostile}{' --subprocess' if a.subprocess else ''} --seed {a.seed}`.")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n")
    return 1 if mismatches or rep.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
