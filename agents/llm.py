"""LLM backends behind one client path, with retries, timeouts and token accounting.

`--llm openai:gpt-4o-mini` or `--llm openai:MODEL@BASE_URL` -> `ChatOpenAI` (any OpenAI-compatible
server); `--llm local` -> the embedded llama.cpp server (agents/local_llm.py) through the same
`ChatOpenAI`; `--llm none` -> no LLM (the statistical analyst and planner). Structured output is
function calling (`bind_tools` with a forced tool), parsed and validated here with pydantic, so a
malformed answer becomes an error message for a repair turn, never an exception that ends a run.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from archlore.tools.env import env
from archlore.tools.errors import ConfigError
from pydantic import BaseModel, ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

# USD per million tokens (input, output); unknown models are reported at 0 with a note.
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-nano": (0.10, 0.40),
}


@dataclass(frozen=True)
class LLMSpec:
    provider: str  # "openai", "local" or "none"
    model: str = ""
    base_url: str | None = None

    @property
    def label(self) -> str:
        if self.provider == "openai":
            return f"openai:{self.model}" + (f"@{self.base_url}" if self.base_url else "")
        return self.provider


def parse_llm(spec: str) -> LLMSpec:
    """`none`, `local`, `openai:MODEL` or `openai:MODEL@BASE_URL`."""
    spec = spec.strip()
    if spec in {"none", "local"}:
        return LLMSpec(spec)
    if spec.startswith("openai:"):
        rest = spec[len("openai:") :]
        model, _, base = rest.partition("@")
        if not model:
            raise ConfigError("--llm openai:MODEL needs a model name, e.g. openai:gpt-4o-mini")
        return LLMSpec("openai", model, base or env().openai_base_url or None)
    raise ConfigError(f"unknown --llm {spec!r}: use none, local, openai:MODEL or openai:MODEL@BASE_URL")


@dataclass(frozen=True)
class LLMSettings:
    timeout: float = 120.0  # seconds per call
    retries: int = 4  # extra attempts on timeouts, connection errors, 429 and 5xx
    backoff_min: float = 1.0
    backoff_max: float = 20.0
    temperature: float = 0.0
    max_tokens: int = 1024
    # how the analyst and the planner ask: "write" (the model writes principles and lists choices)
    # or "choose" (code ranks the options, the model names the ones it takes: short prompts and
    # answers of a few tokens, what a small local model can do well and fast)
    prompt: str = "write"


@dataclass
class Usage:
    """Token use and time of LLM calls, per node."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0
    errors: int = 0

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def merge_usage(a: dict[str, dict] | None, b: dict[str, dict] | None) -> dict[str, dict]:
    """Reducer for the `tokens` state key: sum per node."""
    out = {k: dict(v) for k, v in (a or {}).items()}
    for node, u in (b or {}).items():
        cur = out.setdefault(node, {})
        for k, v in u.items():
            cur[k] = round(cur.get(k, 0) + v, 6)
    return out


def _retryable(exc: BaseException) -> bool:
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on openai
        return False
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass
class StructuredResult:
    value: BaseModel | None
    error: str | None
    raw: Any = None


@dataclass
class LLM:
    """A chat model plus retries, per-call timeout and accounting. `model` is a LangChain chat model."""

    model: Any
    name: str
    settings: LLMSettings = field(default_factory=LLMSettings)

    def _price(self) -> tuple[float, float]:
        base = self.name.split(":", 1)[-1].split("@")[0]
        return PRICES.get(base, (0.0, 0.0))

    def invoke(
        self, messages: Sequence[Any], usage: Usage, *, tools: Sequence[Any] = (), tool_choice: str | None = None,
        response_format: dict | None = None,
    ) -> Any:
        model = self.model.bind_tools(list(tools), tool_choice=tool_choice) if tools else self.model
        if response_format is not None:
            model = model.bind(response_format=response_format)
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.settings.retries + 1),
            wait=wait_exponential(min=self.settings.backoff_min, max=self.settings.backoff_max),
            reraise=True,
            before_sleep=lambda rs: (
                setattr(usage, "errors", usage.errors + 1),
                log.warning("LLM call failed (%s); retrying", rs.outcome.exception()),
            ),
        )
        start = time.perf_counter()
        try:
            msg = retrying(model.invoke, list(messages))
        finally:
            usage.seconds += time.perf_counter() - start
        usage.calls += 1
        meta = getattr(msg, "usage_metadata", None) or {}
        i, o = int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
        usage.input_tokens += i
        usage.output_tokens += o
        pin, pout = self._price()
        usage.cost_usd += (i * pin + o * pout) / 1e6
        return msg

    def structured(self, schema: type[T], messages: Sequence[Any], usage: Usage) -> StructuredResult:
        """Ask for `schema` by function calling; return the value or a readable error."""
        msg = self.invoke(messages, usage, tools=[schema], tool_choice=schema.__name__)
        return parse_structured(schema, msg)


def json_format(schema: type[BaseModel]) -> dict:
    """llama.cpp's `response_format` for a JSON answer that follows `schema`."""
    return {"type": "json_object", "schema": schema.model_json_schema()}


def parse_structured(schema: type[T], msg: Any) -> StructuredResult:
    calls = [c for c in getattr(msg, "tool_calls", None) or [] if c.get("name") == schema.__name__]
    candidates: list[Any] = [c["args"] for c in calls]
    bad = getattr(msg, "invalid_tool_calls", None) or []
    if not candidates:
        for c in bad:
            candidates.append(c.get("args") or "")
        text = getattr(msg, "content", "") or ""
        if isinstance(text, str) and "{" in text:
            candidates.append(text[text.find("{") : text.rfind("}") + 1])
    if not candidates:
        return StructuredResult(None, f"no {schema.__name__} function call in the answer", msg)
    errors = []
    for cand in candidates:
        try:
            if isinstance(cand, str):
                cand = json.loads(_strip_fences(cand))
            return StructuredResult(schema.model_validate(cand), None, msg)
        except json.JSONDecodeError as exc:
            errors.append(f"the arguments are not valid JSON ({exc.msg} at position {exc.pos})")
        except ValidationError as exc:
            errors.append(_short_validation(exc))
        except RecursionError:  # a model stuck in a loop can nest thousands of brackets
            errors.append("the arguments are nested too deeply to be read; answer with the flat object asked for")
    return StructuredResult(None, "; ".join(errors)[:800], msg)


def _strip_fences(text: str) -> str:
    return re.sub(r"^```(?:json)?|```$", "", text.strip()).strip()


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:6]:
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    return "invalid fields: " + "; ".join(parts)


def make_openai(spec: LLMSpec, settings: LLMSettings, *, api_key: str | None = None) -> LLM:
    """A ChatOpenAI for OpenAI or any OpenAI-compatible server."""
    from langchain_openai import ChatOpenAI

    key = api_key or env().openai_api_key
    if not key and not spec.base_url:
        raise ConfigError(
            f"--llm {spec.label} needs OPENAI_API_KEY; for a local server use "
            "openai:MODEL@http://127.0.0.1:PORT/v1, or --llm local / --llm none"
        )
    model = ChatOpenAI(
        model=spec.model,
        base_url=spec.base_url,
        api_key=key or "not-needed",
        timeout=settings.timeout,
        max_retries=0,  # tenacity retries, so backoff is ours and visible
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
    return LLM(model, spec.label, settings)


def repair_messages(raw: Any, error: str, function: str) -> list[Any]:
    """The turn that quotes a validation error back to the model.

    The rejected answer is replayed as plain assistant text (its function arguments), not as a
    tool call: an answer with tool calls would need one tool message per call, and some
    OpenAI-compatible servers (llama.cpp's) reject assistant messages without text content.
    """
    from langchain_core.messages import AIMessage, HumanMessage

    from .prompts import REPAIR

    text = REPAIR.format(error=error, function=function)
    if raw is None:
        return [HumanMessage(text)]
    calls = list(getattr(raw, "tool_calls", None) or []) + list(getattr(raw, "invalid_tool_calls", None) or [])
    said = "\n".join(
        f"{c.get('name')}({c['args'] if isinstance(c.get('args'), str) else json.dumps(c.get('args'))})" for c in calls
    ) or str(getattr(raw, "content", "") or "")
    return [AIMessage(said[:4000] or "(empty answer)"), HumanMessage(text)]
