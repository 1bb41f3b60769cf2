"""Which LLM each agent role uses, and the fallback chain behind each role.

`--llm` names one backend chain for every role (`local`, `openai:gpt-4o-mini>local>none`) or one
per role: `analyst=openai:gpt-4o-mini>local>none,planner=local,default=none` (roles not named take
`default`, itself `none` unless given). `--llm-config FILE.yaml` says the same with per-role
settings (timeout, retries, temperature, max_tokens, prompt); its entries win over `--llm` for the roles
they name. Settings default by backend kind: a local model gets a long timeout and one retry, a
hosted API a short timeout and four retries; a local model is asked to choose among options code ranked
(`prompt: choose`), a hosted one to write (`prompt: write`).

At run time `RoleLLMs` holds one `RoleLLM` per role. A `RoleLLM` quacks like `agents.llm.LLM`
(`invoke`, `structured`, `name`) over its chain: when a backend is unreachable, rate-limited past
its retries or (said by the caller through `fall`) keeps answering invalid output after a repair,
the role moves to the next backend for the rest of the round and records the switch; the next
round starts again at the head of the chain. `none` (written or implied at the end of a chain)
means the statistical agents: `RunContext.llm_for(role)` then returns None. The local llama.cpp
server is started at most once per `build` and shared by every role that uses it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from archlore.tools.errors import ArchloreError, ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .llm import (
    LLM,
    LLMSettings,
    LLMSpec,
    Usage,
    json_format,
    make_openai,
    parse_llm,
    parse_structured,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

ROLES = ("analyst", "planner", "ranker", "coordinator")
DEFAULT = "default"

# per backend kind: a 1.5B model on one busy CPU thread needs minutes for a long prompt and a stuck
# local server rarely recovers by waiting (one retry); hosted APIs answer fast and throttle (four)
KIND_DEFAULTS = {
    "local": LLMSettings(timeout=600.0, retries=1, prompt="choose"),
    "openai": LLMSettings(timeout=120.0, retries=4),
    "none": LLMSettings(),
}

_ROLE_ITEM = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*=(.*)$", re.DOTALL)
_ROLE_SYNTAX = re.compile(r"^\s*[A-Za-z_][\w-]*\s*=")


class RoleDown(ArchloreError):
    """Every backend of a role's chain failed this round (the caller takes the statistical path)."""


class RoleOptions(BaseModel):
    """One role's entry in an --llm-config file."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = None  # a chain; unset: what --llm gives the role
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    retries: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    prompt: Literal["write", "choose"] | None = None  # unset: the backend kind's (local: choose)


@dataclass(frozen=True)
class Link:
    """One backend of a chain with the settings its calls use."""

    spec: LLMSpec
    settings: LLMSettings

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def kind(self) -> str:
        return self.spec.provider


@dataclass(frozen=True)
class RolePlan:
    role: str
    links: tuple[Link, ...]

    @property
    def label(self) -> str:
        return ">".join(link.label for link in self.links)

    @property
    def uses_llm(self) -> bool:
        return any(link.kind != "none" for link in self.links)


def _role_name(name: str, where: str) -> str:
    name = name.strip()
    if name not in (*ROLES, DEFAULT):
        raise ConfigError(f"unknown role {name!r} in {where}: use {', '.join(ROLES)} or {DEFAULT}")
    return name


def parse_chain(text: str, where: str = "--llm") -> tuple[LLMSpec, ...]:
    """`openai:gpt-4o-mini>local>none` -> the backends in order (none only last, no repeats)."""
    parts = [p.strip() for p in str(text).split(">")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"{where}: {text!r} has an empty backend; write e.g. openai:gpt-4o-mini>local>none")
    specs = tuple(parse_llm(p) for p in parts)
    for i, spec in enumerate(specs[:-1]):
        if spec.provider == "none":
            raise ConfigError(f"{where}: 'none' must be last in {text!r} (the backends after it would never be used)")
        if spec in specs[i + 1 :]:
            raise ConfigError(f"{where}: {spec.label} appears twice in {text!r}")
    return specs


def parse_assignment(text: str) -> dict[str, tuple[LLMSpec, ...]]:
    """`--llm`: one chain for every role, or `role=chain,...` (roles not named: `default`)."""
    text = str(text).strip()
    if not _ROLE_SYNTAX.match(text):
        return {DEFAULT: parse_chain(text)}
    out: dict[str, tuple[LLMSpec, ...]] = {}
    for item in text.split(","):
        if not item.strip():
            raise ConfigError(f"--llm {text!r} has an empty item between commas; write e.g. analyst=local,planner=none")
        m = _ROLE_ITEM.match(item)
        if not m:
            raise ConfigError(f"--llm: {item.strip()!r} is not ROLE=BACKEND; write e.g. analyst=local,planner=none")
        role = _role_name(m.group(1), "--llm")
        if role in out:
            raise ConfigError(f"--llm names role {role!r} twice")
        out[role] = parse_chain(m.group(2), f"--llm {role}=")
    return out


def check_config(raw: Any, where: str = "--llm-config") -> dict[str, dict]:
    """A config mapping checked and normalised (role -> options dict, unset options dropped)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map roles ({', '.join(ROLES)}, {DEFAULT}) to a backend or options")
    out: dict[str, dict] = {}
    for key, value in raw.items():
        role = _role_name(str(key), where)
        if isinstance(value, str):
            value = {"backend": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {role} must be a backend chain or a mapping of backend, timeout, retries, temperature, max_tokens, prompt")
        try:
            opts = RoleOptions.model_validate(value)
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(x) for x in e["loc"])
            raise ConfigError(f"{where}: {role}.{loc}: {e['msg']}") from None
        if opts.backend is not None:
            parse_chain(opts.backend, f"{where} {role}.backend")
        out[role] = opts.model_dump(exclude_none=True)
    return out


def load_config(path: str | Path) -> dict[str, dict]:
    """Read an --llm-config file (YAML or JSON), checked; a one-line ConfigError when it is wrong."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --llm-config {p}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"--llm-config {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {str(exc).splitlines()[0]}") from None
    raw = raw.get("roles", raw) if isinstance(raw, dict) and set(raw) == {"roles"} else raw
    return check_config(raw, f"--llm-config {p.name}")


def resolve(
    llm: str = "none", config: dict | None = None, *, timeout: float | None = None, retries: int | None = None,
) -> dict[str, RolePlan]:
    """Every role's chain and per-backend settings.

    Precedence, lowest first: the backend kind's defaults, the run's `--llm-timeout`/`--llm-retries`,
    the role's (then `default`'s) options in the config.
    """
    chains = parse_assignment(llm)
    opts = check_config(config or {})
    for role, o in opts.items():
        if "backend" in o:
            chains[role] = parse_chain(o["backend"], f"--llm-config {role}.backend")
    default_chain = chains.get(DEFAULT, (parse_llm("none"),))
    plans: dict[str, RolePlan] = {}
    for role in ROLES:
        own = {**opts.get(DEFAULT, {}), **opts.get(role, {})}
        links = []
        for spec in chains.get(role, default_chain):
            s = KIND_DEFAULTS[spec.provider]
            if timeout is not None:
                s = replace(s, timeout=float(timeout))
            if retries is not None:
                s = replace(s, retries=int(retries))
            s = replace(s, **{k: v for k, v in own.items() if k != "backend"})
            links.append(Link(spec, s))
        plans[role] = RolePlan(role, tuple(links))
    return plans


# ---------------------------------------------------------------------------------------------
# run time


def add_usage(dst: Usage, src: Usage) -> None:
    for k, v in src.__dict__.items():
        setattr(dst, k, getattr(dst, k) + v)


class Backend:
    """One backend's client, made on first use (a fallback-only local server starts only if needed)."""

    def __init__(
        self, label: str, kind: str, make: Callable[[], LLM] | None = None, llm: LLM | None = None,
        settings: LLMSettings | None = None,
    ) -> None:
        self.label, self.kind, self._make, self._llm = label, kind, make, llm
        self.settings = settings if settings is not None else (llm.settings if llm is not None else LLMSettings())

    def client(self) -> LLM:
        if self._llm is None:
            assert self._make is not None, "a none backend has no client"
            self._llm = self._make()
        return self._llm


NONE = Backend("none", "none")


def _why(exc: BaseException) -> str:
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on openai
        openai = None
    text = f"{type(exc).__name__}: {exc}"[:300]
    if openai is not None:
        if isinstance(exc, openai.RateLimitError):
            return f"rate-limited past its retries ({text})"
        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return f"unreachable ({text})"
        if isinstance(exc, openai.APIStatusError):
            return f"HTTP {exc.status_code} past its retries ({text})"
    return f"failed ({text})"


class RoleLLM:
    """A role's chain at run time: the current backend, its fallbacks, and the accounting."""

    def __init__(self, role: str, chain: Sequence[Backend], owner: RoleLLMs) -> None:
        self.role = role
        self.chain = list(chain)
        self.index = 0
        self._owner = owner

    @property
    def current(self) -> Backend:
        return self.chain[self.index] if self.index < len(self.chain) else NONE

    @property
    def name(self) -> str:
        return self.current.label

    @property
    def kind(self) -> str:
        return self.current.kind

    @property
    def active(self) -> bool:
        return self.current.kind != "none"

    @property
    def prompt(self) -> str:
        """How the current backend is asked: "write" or "choose" (`LLMSettings.prompt`)."""
        return self.current.settings.prompt

    def fall(self, reason: str, *, node: str = "") -> bool:
        """Leave the current backend for the rest of the round; True if another LLM backend follows."""
        old = self.current
        self.index += 1
        self._owner.switched(self.role, old.label, self.current.label, reason, node)
        log.warning("role %s: %s -> %s (%s)", self.role, old.label, self.current.label, reason)
        return self.active

    def invoke(
        self, messages: Sequence[Any], usage: Usage, *, tools: Sequence[Any] = (), tool_choice: str | None = None,
        response_format: Callable[[str], dict | None] | None = None,
    ) -> Any:
        """One call on the current backend; a backend that fails after its retries hands the same
        call to the next one. Raises RoleDown when no LLM backend is left this round.
        `response_format(kind)` gives the JSON format to ask the backend of that kind for (or None)."""
        while True:
            backend = self.current
            if backend.kind == "none":
                raise RoleDown(f"role {self.role} has no LLM backend left this round")
            own = Usage()
            try:
                fmt = response_format(backend.kind) if response_format is not None else None
                kw = {"response_format": fmt} if fmt is not None else {"tools": tools, "tool_choice": tool_choice}
                return backend.client().invoke(messages, own, **kw)
            except Exception as exc:  # noqa: BLE001 - one provider down never ends a run
                reason = _why(exc)
            finally:
                add_usage(usage, own)
                self._owner.charge(self.role, backend.label, own)
            self.fall(reason)

    def structured(self, schema: type[T], messages: Sequence[Any], usage: Usage) -> Any:
        msg = self.invoke(messages, usage, tools=[schema], tool_choice=schema.__name__)
        return parse_structured(schema, msg)

    def choose(self, schema: type[T], messages: Sequence[Any], usage: Usage) -> Any:
        """A short structured answer ("choose" prompts): a local llama.cpp backend is asked for
        grammar-constrained JSON (no function definition in the prompt), any other by function
        calling, as `structured`."""
        msg = self.invoke(messages, usage, tools=[schema], tool_choice=schema.__name__,
                          response_format=lambda kind: json_format(schema) if kind == "local" else None)
        return parse_structured(schema, msg)


@dataclass
class RoleLLMs:
    """Every role's chain for one run. `fresh()` gives another run the same clients, clean state."""

    plans: dict[str, RolePlan]
    backends: dict[tuple[str, LLMSettings], Backend]
    now: Callable[[], int] | None = None  # evaluations used so far, stamped on each switch
    _roles: dict[str, RoleLLM] = field(default_factory=dict, init=False, repr=False)
    _usage: dict[tuple[str, str], Usage] = field(default_factory=dict, init=False, repr=False)
    _switches: list[dict] = field(default_factory=list, init=False, repr=False)
    _round: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for role, plan in self.plans.items():
            chain = [NONE if link.kind == "none" else self.backends[(link.label, link.settings)] for link in plan.links]
            self._roles[role] = RoleLLM(role, chain, self)

    @classmethod
    def single(cls, llm: LLM) -> RoleLLMs:
        """One ready LLM for every role (tests, callers that build their own client)."""
        kind = "local" if llm.name == "local" else "openai"
        model, _, base = llm.name.removeprefix("openai:").partition("@")
        spec = LLMSpec("local") if kind == "local" else LLMSpec("openai", model, base or None)
        link = Link(spec, llm.settings)
        backend = Backend(llm.name, kind, llm=llm)
        plans = {role: RolePlan(role, (link,)) for role in ROLES}
        return cls(plans, {(link.label, link.settings): backend})

    def fresh(self) -> RoleLLMs:
        return RoleLLMs(self.plans, self.backends, self.now)

    def get(self, role: str) -> RoleLLM | None:
        if role not in self._roles:
            raise ConfigError(f"unknown role {role!r}: use {', '.join(ROLES)}")
        r = self._roles[role]
        return r if r.active else None

    def new_round(self, rnd: int) -> None:
        """Every chain starts again at its head (a backend that failed last round gets another chance)."""
        if rnd != self._round:
            self._round = rnd
            for r in self._roles.values():
                r.index = 0

    def charge(self, role: str, backend: str, usage: Usage) -> None:
        add_usage(self._usage.setdefault((role, backend), Usage()), usage)

    def switched(self, role: str, old: str, new: str, reason: str, node: str) -> None:
        self._switches.append({
            "event": "llm_switch", "role": role, "from": old, "to": new, "reason": reason, "node": node,
            "evaluations": self.now() if self.now else None, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })

    def drain(self, node: str, rnd: int) -> dict[str, list[dict]]:
        """What happened since the last drain, as journal entries (`llm_usage`, switch `event`s)."""
        usage = [{"role": role, "backend": b, "node": node, "round": rnd, **u.to_dict()}
                 for (role, b), u in self._usage.items() if u.calls or u.seconds or u.errors]
        switches = [{**s, "node": s["node"] or node, "round": rnd} for s in self._switches]
        self._usage.clear()
        self._switches.clear()
        return {"llm_usage": usage, "event": switches}

    def describe(self) -> dict[str, str]:
        return {role: plan.label for role, plan in self.plans.items()}


def build(plans: dict[str, RolePlan], stack: ExitStack) -> RoleLLMs | None:
    """Clients for every backend the plans use (None when no role uses an LLM).

    One local llama.cpp server for all roles, started now if some chain begins with `local` (a
    missing local extra then fails the run before it starts), else on first use as a fallback.
    """
    if not any(p.uses_llm for p in plans.values()):
        return None
    server: list[Any] = []

    def local_server() -> Any:
        if not server:
            from . import local_llm

            server.append(stack.enter_context(local_llm.LocalLLMServer()))
        return server[0]

    def maker(link: Link) -> Callable[[], LLM]:
        if link.kind == "local":
            def make_local() -> LLM:
                srv = local_server()
                llm = make_openai(LLMSpec("openai", srv.model, srv.base_url), link.settings, api_key="local")
                llm.name = "local"
                return llm
            return make_local
        return lambda: make_openai(link.spec, link.settings)

    backends: dict[tuple[str, LLMSettings], Backend] = {}
    for plan in plans.values():
        for i, link in enumerate(plan.links):
            key = (link.label, link.settings)
            if link.kind == "none" or key in backends:
                continue
            backends[key] = b = Backend(link.label, link.kind, maker(link), settings=link.settings)
            if i == 0:
                # the head of a chain: a missing key or local extra fails the run now, not mid-run,
                # unless the chain has a fallback (then the first call falls over, and says why)
                try:
                    b.client()
                except ArchloreError as exc:
                    if len(plan.links) == 1:
                        raise
                    log.warning("role %s: %s is not usable (%s); its fallbacks will answer", plan.role, link.label, exc)
    return RoleLLMs(plans, backends)


def usage_summary(entries: Sequence[dict]) -> dict[str, dict]:
    """The journal's `llm_usage` entries summed per role (and backend inside it) and per backend."""
    keys = ("calls", "input_tokens", "output_tokens", "seconds", "cost_usd", "errors")
    per_role: dict[str, dict] = {}
    per_backend: dict[str, dict] = {}

    def add(into: dict, e: dict) -> None:
        for k in keys:
            into[k] = round(into.get(k, 0) + e.get(k, 0), 6)

    for e in entries:
        role = per_role.setdefault(e["role"], {"total": {}, "backends": {}})
        add(role["total"], e)
        add(role["backends"].setdefault(e["backend"], {}), e)
        add(per_backend.setdefault(e["backend"], {}), e)
    return {"per_role": per_role, "per_backend": per_backend}
