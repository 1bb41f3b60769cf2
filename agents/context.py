"""Run settings (serialisable, so a killed run resumes with the same ones) and the runtime
context through which infrastructure reaches the graph's nodes and tools."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import SearchSpace

from .roles import RoleLLM, RoleLLMs, resolve

# LAPT's schedules: (warm-up evaluations, check every, top-k fed back, REA population, tournament, k)
SCHEDULES = {
    "nb201": (5, 5, 5, 5, 2, 2),
    "tnb101": (10, 10, 15, 10, 5, 3),
}
DEFAULT_SCHEDULE = (10, 10, 10, 10, 5, 3)
SCHEDULE_FIELDS = ("warmup", "check_every", "top_k", "population", "tournament", "max_choices")


def schedule_key(space: str) -> str:
    """The built-in space a --space value names (any spelling get_space accepts), else the value."""
    key = space.lower().replace("-", "").replace("_", "")
    if key in {"nb201", "nasbench201"}:
        return "nb201"
    if key in {"tnb101", "transnas", "transnasbench101", "transnas101"}:
        return "tnb101"
    return space


def adaptive_schedule(radix: tuple[int, ...], budget: int) -> tuple[tuple[int, ...], dict[str, str]]:
    """Defaults for a space without a LAPT schedule, and why each was chosen.

    Choices kept per position: fewer than a typical position has (median - 1, at most 3, at least
    1), so the planner's filter narrows even with 3 choices per position. The schedule scales with
    the budget: a check about every fifth of it (3..10 evaluations), top-k and the REA population
    a quarter of it (3..10), the tournament half the population.
    """
    median = sorted(radix)[len(radix) // 2]
    k = max(1, min(3, median - 1))
    every = max(3, min(10, budget // 5))
    top = max(3, min(10, budget // 4))
    population = max(3, min(10, budget // 4))
    tournament = max(2, population // 2)
    why = {
        "max_choices": f"a position typically has {median} choices; keep fewer so the filter narrows",
        "warmup": f"about a fifth of the budget of {budget}, 3..10",
        "check_every": f"about a fifth of the budget of {budget}, 3..10",
        "top_k": "about a quarter of the budget, 3..10",
        "population": "about a quarter of the budget, 3..10",
        "tournament": "half the population",
    }
    return (every, every, top, population, tournament, k), why
# the search step: the first four inside the planner's filters; `rank` alone (LM-Searcher's ranking
# over the whole space: no analyst or planner call)
STRATEGIES = ("guided-rea", "rea", "random", "guided-rank", "rank")


# settings that only mean something with --executor train, and their unset values
TRAINING_ONLY = {"dataset": None, "data_root": None, "model": None, "recipe": "proxy", "concurrency": 1,
                 "fidelity": False, "max_epochs": None, "device": None}


@dataclass(kw_only=True)
class RunSettings:
    """Everything that defines a run. Unset schedule fields take the space's LAPT defaults."""

    run_id: str
    space: str = "nb201"
    target: str = "cifar100"
    source: str | None = "cifar10"
    budget: int = 20
    llm: str = "none"  # a chain for every role, or role=chain,... (agents/roles.py)
    llm_config: dict | None = None  # per-role backends and options (an --llm-config file, checked)
    seed: int = 0
    executor: str = "tabular"  # tabular | train
    strategy: str = "guided-rea"  # guided-rea | rea | random | guided-rank (inside the filters) | rank (alone)
    data: str | None = None
    table: str | None = None  # a user CSV for user spaces
    memory: str | None = None  # path or http URL; "off" disables
    embedding: str = "minilm"
    remember: bool = True  # write the final principles to the memory (off: recall only)
    approve: bool = False  # wait for a person to approve (or edit) each planned filter; chat runs only
    task_description: str | None = None
    warmup: int | None = None
    check_every: int | None = None
    top_k: int | None = None  # top cells of this task fed back to the analyst
    population: int | None = None
    tournament: int | None = None
    max_choices: int | None = None  # k: at most this many choices per position
    top_n: int = 50  # source cells the evidence is computed over
    show_n: int = 10  # source cells rendered as layer lists
    tool_rounds: int | None = None  # analyst tool-calling rounds (default: 1 hosted, 0 local)
    llm_timeout: float | None = None  # seconds per LLM call (default: 120 hosted, 600 local)
    llm_retries: int | None = None  # default: 4 hosted, 1 local
    train_epochs: int | None = None  # overrides the recipe's epochs
    # --executor train: what is trained on what (tools/data.py, tools/builders.py, tools/recipe.py)
    dataset: str | None = None  # digits | cifar10 | cifar100 | imagenet16-120 | folder:PATH | npz:PATH (default: the target if it names one)
    data_root: str | None = None  # where cifar10/cifar100/imagenet16-120 live (downloaded there when missing)
    split_seed: int = 0  # fixes the train/valid/test split (never the training seed)
    model: str | None = None  # builder: nb201 | darts | cnn | mlp | package.module:function (default: the space's)
    model_options: dict[str, Any] = field(default_factory=dict)  # builder options (a space file's model: options)
    recipe: str = "proxy"  # a preset (proxy, nb201-12, nb201-200, darts, darts-proxy) or a YAML file
    recipe_spec: dict[str, Any] | None = None  # the recipe as loaded (a file's content kept: --resume needs no file)
    concurrency: int = 1  # candidates trained at once
    fidelity: bool = False  # successive halving on epochs within each search step
    min_epochs: int = 1  # the first rung of successive halving
    max_epochs: int | None = None  # the last rung (default: the recipe's epochs)
    eta: int = 3  # successive halving keeps the best 1/eta of a rung for the next
    device: str | None = None  # cpu | cuda | cuda:N (default: cuda when there is one)
    count_failed: bool = True  # a failed candidate (OOM, NaN loss, builder error) costs one evaluation
    cluster: str | None = None  # None: evaluate here; local | auto | ray://HOST:PORT: Ray tasks
    candidate_gpus: float | None = None  # GPUs per candidate on a Ray cluster (0.25 packs 4 per GPU)
    limits: dict[str, float] = field(default_factory=dict)  # --max NAME=VALUE: cost limits
    objectives: list[str] = field(default_factory=list)  # --objective a,b: Pareto mode
    # recall principles whose data included the target's own task (earlier runs on it): right for
    # a user searching the same task again (`archlore run` turns it on unless told otherwise),
    # wrong for a benchmark; off by default, so every programmatic caller (the harness, the
    # transfer experiment, an old settings.json) keeps the target's data out of its prior
    recall_same_task: bool = False
    defaults: dict[str, str] = field(default_factory=dict)  # schedule fields left unset, and why
    created: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget < 1:
            raise ConfigError("--budget must be at least 1")
        unset = [n for n in SCHEDULE_FIELDS if getattr(self, n) is None]
        if unset:
            key = schedule_key(self.space)
            if key in SCHEDULES:
                sched, why = SCHEDULES[key], dict.fromkeys(SCHEDULE_FIELDS, f"LAPT's schedule for {key}")
            else:
                try:
                    from archlore.tools.spaces import get_space

                    sched, why = adaptive_schedule(get_space(self.space).radix, self.budget)
                except ArchloreError:  # the space is checked (with its own message) by the preflight
                    sched, why = DEFAULT_SCHEDULE, dict.fromkeys(SCHEDULE_FIELDS, "fixed default")
            for name, default in zip(SCHEDULE_FIELDS, sched):
                if getattr(self, name) is None:
                    setattr(self, name, default)
                    self.defaults[name] = f"{default} ({why[name]})"
        if self.source is not None and self.source == self.target:
            raise ConfigError(
                f"source and target are both {self.target!r}: principles must come from another task "
                "(learning them from the target's own data is leakage); pass a different --source, or "
                "--source none to search without a source table"
            )
        if not isinstance(self.limits, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in self.limits.values()
        ):
            raise ConfigError(f"cost limits must be NAME=positive number, got {self.limits!r}")
        if self.objectives and (len(self.objectives) < 2 or len(set(self.objectives)) != len(self.objectives)):
            raise ConfigError(f"--objective needs two or more different names, got {','.join(self.objectives)}")
        if self.objectives and self.objectives[0] != self.target:
            raise ConfigError(
                f"--objective {','.join(self.objectives)}: the first objective is the metric searched, so it must "
                f"be the target {self.target!r} (e.g. --objective {self.target},{self.objectives[-1]})"
            )
        if self.executor not in {"tabular", "train"}:
            raise ConfigError(f"unknown --executor {self.executor!r}: use tabular or train")
        if self.executor == "train":
            self._check_training()
        else:
            given = [name for name, unset in TRAINING_ONLY.items() if getattr(self, name) != unset]
            if given:
                raise ConfigError(
                    f"{', '.join('--' + n.replace('_', '-') for n in given)} set how candidates are trained: "
                    f"add --executor train (this run looks its results up in a table)"
                )
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {self.strategy!r}: use {', '.join(STRATEGIES)}")
        resolve(self.llm, self.llm_config, timeout=self.llm_timeout, retries=self.llm_retries)  # fail before anything is created
        for name in ("warmup", "check_every", "max_choices", "top_k", "population", "tournament", "top_n", "show_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.tournament > self.population:
            raise ConfigError(f"the tournament ({self.tournament}) cannot be larger than the population ({self.population})")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be a whole number of at least 0, got {self.seed!r}")
        for name, low in (("train_epochs", 1), ("tool_rounds", 0), ("llm_retries", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least {low}, got {value!r}")
        if self.llm_timeout is not None and not (self.llm_timeout > 0 and math.isfinite(self.llm_timeout)):
            raise ConfigError(f"--llm-timeout must be a positive number of seconds, got {self.llm_timeout!r}")
        if self.embedding not in {"minilm", "hash"}:
            raise ConfigError(f"unknown --embedding {self.embedding!r}: use minilm or hash")
        if self.cluster is not None:
            from archlore.tools.distributed import check_cluster

            check_cluster(self.cluster)
        if self.candidate_gpus is not None and not (
            isinstance(self.candidate_gpus, (int, float)) and 0 <= self.candidate_gpus <= 64
        ):
            raise ConfigError(f"--candidate-gpus must be a number from 0 to 64 (a fraction packs candidates), got {self.candidate_gpus!r}")

    def _check_training(self) -> None:
        """--executor train: the data set (the old `--target digits` still names it), the
        recipe (loaded now and kept, so a resumed run trains as the first part did), the builder's
        name and the fidelity schedule. Files are read by the runner's preflight, not here."""
        from archlore.tools.data import check_dataset
        from archlore.tools.recipe import Recipe, load_recipe

        if self.dataset is None:
            try:
                self.dataset = check_dataset(self.target)
            except ArchloreError:
                raise ConfigError(
                    f"--executor train needs a data set: pass --dataset (digits, cifar10, cifar100, imagenet16-120, "
                    f"folder:PATH or npz:PATH); the target {self.target!r} does not name one"
                ) from None
        check_dataset(self.dataset)
        if self.recipe_spec is None:
            self.recipe_spec = load_recipe(self.recipe).model_dump(mode="json")
        else:
            try:
                Recipe.model_validate(self.recipe_spec)
            except ValueError as exc:
                raise ConfigError(f"the saved recipe is damaged: {str(exc).splitlines()[0]}") from None
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError("--model must be nb201, darts, cnn, mlp or package.module:function")
        if not isinstance(self.model_options, dict):
            raise ConfigError(f"model options must be a mapping of names to values, got {self.model_options!r}")
        for name, low in (("concurrency", 1), ("min_epochs", 1), ("eta", 2), ("split_seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least {low}, got {value!r}")
        top = self.max_epochs if self.max_epochs is not None else self.train_epochs or self.recipe_spec["epochs"]
        if not isinstance(top, int) or isinstance(top, bool) or top < self.min_epochs:
            raise ConfigError(f"--max-epochs ({top!r}) must be a whole number of at least --min-epochs ({self.min_epochs})")
        if self.device is not None and not (self.device in ("cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"unknown --device {self.device!r}: use cpu, cuda or cuda:N")

    def training_recipe(self) -> Any:
        """The recipe candidates are trained with (`--train-epochs` applied)."""
        from archlore.tools.recipe import Recipe

        recipe = Recipe.model_validate(self.recipe_spec)
        return recipe.with_(epochs=self.train_epochs) if self.train_epochs else recipe

    def rungs(self) -> list[int]:
        """Successive halving's epochs per rung (tools/fidelity.py): min_epochs, x eta, ...,
        max_epochs (default: the recipe's epochs) the last."""
        from archlore.tools.fidelity import rung_epochs

        return rung_epochs(self.min_epochs, self.max_epochs or self.training_recipe().epochs, self.eta)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)


@dataclass
class RunContext:
    """Infrastructure for one run; reaches nodes through `runtime.context`, never the LLM."""

    settings: RunSettings
    space: SearchSpace
    evaluator: Evaluator
    source: SourceView | None  # the source task(s)' validation data only; never a target column
    target_description: str
    source_description: str
    llm: Any = None  # agents.roles.RoleLLMs (a chain per role), one agents.llm.LLM for every role, or None
    memory: Any = None  # memory.store.PrincipleStore or None
    on_event: Any = None  # callable(dict) for progress display
    objectives: Any = None  # tools.pareto.Objectives in Pareto mode (--objective), else None
    cost: Any = None  # tools.constraints.CostFunction when the run has limits or cost objectives

    _roles: Any = field(default=None, init=False, repr=False)
    _roles_of: Any = field(default=None, init=False, repr=False)

    def roles(self) -> RoleLLMs | None:
        """The per-role chains (a single LLM given as `llm` serves every role)."""
        if self._roles_of is not self.llm:
            self._roles_of = self.llm
            self._roles = self.llm if self.llm is None or isinstance(self.llm, RoleLLMs) else RoleLLMs.single(self.llm)
            if self._roles is not None and self._roles.now is None:
                self._roles.now = lambda: self.evaluator.used
        return self._roles

    def llm_for(self, role: str) -> RoleLLM | None:
        """The LLM of `role` (analyst, planner, ranker, coordinator) now, or None: the statistical path."""
        roles = self.roles()
        return roles.get(role) if roles is not None else None

    def new_round(self, round: int) -> None:
        """A new adaptation round: every role's chain starts again at its first backend."""
        roles = self.roles()
        if roles is not None:
            roles.new_round(round)

    def emit(self, **event: Any) -> None:
        if self.on_event:
            self.on_event(event)

    def journal(self, round: int, node: str, **entries: list[dict]) -> None:
        """Record what `node` decided in `round` (principles, filters, events) in the ledger."""
        roles = self.roles()  # with the LLM use and backend switches of every role since the last call
        if roles is not None:
            llm = roles.drain(node, round)
            entries = {**entries, "event": [*entries.get("event", []), *llm["event"]], "llm_usage": llm["llm_usage"]}
        self.evaluator.ledger.write_journal(self.settings.run_id, round, node, entries)
