"""Principles as a person reads them and as the search uses them.

A principle set is a list of structured effects (`memory.record.Principle`: position, choice,
prefer/avoid, confidence) in the order the search reads them. Effects that share one sentence form
a *statement*: "The top cells of source cifar10 favour nor_conv_3x3 at edge1<-0, edge2<-0 and
edge3<-2: ..." is one statement over three effects. The search uses the effects (their weights
and the option ranking); a person reads the few statements.

A set that prefers and avoids the same choice at one position is not a set of principles:
`PrincipleSet` refuses it (`PrincipleConflict`), so such a set is never shown, planned with or
stored. The helpers both the analyst and the planner need (weights, merging, rendering) live here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archlore.memory.record import Principle
from archlore.tools.errors import ArchloreError
from archlore.tools.evidence import ChoiceEffect, ChoiceStat, Evidence, rank_column
from archlore.tools.spaces import SearchSpace

from .tuning import TUNING, Tuning

TEXT_MAX = 400  # Principle.text's limit


class PrincipleConflict(ArchloreError, ValueError):
    """A principle set prefers and avoids the same choice at the same position."""


def _overlap(a: str, b: str) -> bool:
    return a == b or a == "*" or b == "*"


def conflicts(effects: Iterable[Principle]) -> list[tuple[Principle, Principle]]:
    """Pairs of effects that prefer and avoid one choice at one position ("*" meets every position)."""
    eff = list(effects)
    return [
        (a, b) for i, a in enumerate(eff) for b in eff[i + 1:]
        if a.choice == b.choice and a.direction != b.direction and _overlap(a.position, b.position)
    ]


def resolve_conflicts(effects: Sequence[Principle]) -> tuple[list[Principle], list[Principle]]:
    """Keep the first of every contradicting pair (callers order effects by priority)."""
    kept: list[Principle] = []
    dropped: list[Principle] = []
    for p in effects:
        against = any(q.choice == p.choice and q.direction != p.direction and _overlap(q.position, p.position) for q in kept)
        (dropped if against else kept).append(p)
    return kept, dropped


@dataclass(frozen=True)
class Statement:
    """One sentence a person reads, with the structured effects the search uses."""

    text: str
    effects: tuple[Principle, ...]

    @property
    def confidence(self) -> float:
        return max(p.confidence for p in self.effects)


@dataclass(frozen=True)
class PrincipleSet:
    """The effects of one round, in the search's order; statements group them by sentence."""

    effects: tuple[Principle, ...]

    def __post_init__(self) -> None:
        found = conflicts(self.effects)
        if found:
            a, b = found[0]
            where = a.position if a.position != "*" else b.position
            raise PrincipleConflict(
                f"the principles both {a.direction} and {b.direction} {a.choice} at {where} "
                f"({a.text[:80]!r} / {b.text[:80]!r}); keep one of them (resolve_conflicts keeps the first)"
            )

    @staticmethod
    def compatible(a: Principle, b: Principle) -> bool:
        """False when one prefers and the other avoids the same choice at an overlapping position."""
        return not conflicts([a, b])

    @classmethod
    def of(cls, items: Iterable[Principle | dict[str, Any]]) -> PrincipleSet:
        return cls(tuple(p if isinstance(p, Principle) else Principle(**p) for p in items))

    @property
    def statements(self) -> list[Statement]:
        by_text: dict[str, list[Principle]] = {}
        for p in self.effects:
            by_text.setdefault(p.text, []).append(p)
        return [Statement(text, tuple(ps)) for text, ps in by_text.items()]

    def to_json(self) -> list[dict[str, Any]]:
        """The flat effect dumps the state, the record and the memory keep."""
        return [p.model_dump() for p in self.effects]

    @classmethod
    def from_json(cls, raw: Iterable[dict[str, Any]]) -> PrincipleSet:
        return cls.of(raw)


# ---------------------------------------------------------------------------------------------
# what the search reads
def principle_weights(space: SearchSpace, principles: Iterable[Principle]) -> list[list[float]]:
    """Per position, per choice: the sum of +-confidence of the principles about it."""
    w = [[0.0] * len(p.choices) for p in space.positions]
    by_pos = {p.name: j for j, p in enumerate(space.positions)}
    for pr in principles:
        js = range(len(space.positions)) if pr.position == "*" else [by_pos.get(pr.position)]
        for j in js:
            if j is None or pr.choice not in space.positions[j].choices:
                continue
            c = space.positions[j].choices.index(pr.choice)
            w[j][c] += pr.confidence if pr.direction == "prefer" else -pr.confidence
    return w


def merge_principles(
    new: Sequence[Principle], old: Sequence[Principle], *, decay: float, tuning: Tuning = TUNING,
    carried: str = "Held from an earlier round",
) -> list[Principle]:
    """New principles win wherever they speak; old ones stay after them with decayed confidence.

    An old effect goes when a new one is about the same choice at an overlapping position ("*"
    overlaps every position), or when its decayed confidence falls below the tuning's minimum. An
    old statement that lost some of its effects is restated from the effects it kept, so no
    sentence claims more than the effects under it.
    """
    def spoken(p: Principle) -> bool:
        return any(n.choice == p.choice and _overlap(n.position, p.position) for n in new)

    kept = [
        p.model_copy(update={"confidence": round(p.confidence * decay, 3)})
        for p in old if not spoken(p) and p.confidence * decay >= tuning.min_carried_confidence
    ]
    return list(new) + restate_partial(kept, old, prefix=carried)


def restate_partial(kept: Sequence[Principle], full: Sequence[Principle], prefix: str = "Held from an earlier round") -> list[Principle]:
    """Effects of `kept` whose statement (in `full`) lost effects get a sentence of their own."""
    total: dict[str, int] = {}
    for p in full:
        total[p.text] = total.get(p.text, 0) + 1
    groups: dict[str, list[Principle]] = {}
    for p in kept:
        groups.setdefault(p.text, []).append(p)
    new_text = {t: _fit(f"{prefix}: {_effects_phrase(ps)}.") for t, ps in groups.items() if len(ps) < total.get(t, 0)}
    return [p.model_copy(update={"text": new_text[p.text]}) if p.text in new_text else p for p in kept]


# ---------------------------------------------------------------------------------------------
# sentences from evidence
_EDGE = re.compile(r"^edge(\d+)<-(\d+)$")


def _fit(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1].rstrip() + "…"


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _where(positions: Sequence[str], n_positions: int | None) -> str:
    if "*" in positions:
        return "at every position"
    if n_positions and len(positions) == n_positions > 1:
        return "on every edge" if all(_EDGE.match(p) for p in positions) else "at every position"
    if len(positions) > 6:
        return f"at {len(positions)} positions ({_and(positions)})"
    return "at " + _and(positions)


def _pct(values: Sequence[float]) -> str:
    lo, hi = f"{min(values):.0%}", f"{max(values):.0%}"
    return lo if lo == hi else f"{lo[:-1]}-{hi}"


def _num(values: Sequence[float], fmt: str = ".2f") -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def _group(effects: Sequence[Principle]) -> dict[tuple[str, str], list[Principle]]:
    groups: dict[tuple[str, str], list[Principle]] = {}
    for p in effects:
        groups.setdefault((p.direction, p.choice), []).append(p)
    return groups


def _effects_phrase(effects: Sequence[Principle]) -> str:
    """"avoid nor_conv_1x1 and nor_conv_3x3 at edge3<-0; prefer skip_connect at edge3<-0"."""
    by_where: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (d, c), ps in _group(effects).items():
        by_where.setdefault((d, tuple(p.position for p in ps)), []).append(c)
    return "; ".join(f"{d} {_and(cs)} {_where(list(where), None)}" for (d, where), cs in by_where.items())


def _position_order(evidence: Evidence):  # noqa: ANN202 - a sort key
    index = {col[0].position: j for j, col in enumerate(evidence.stats) if col}
    return lambda name: index.get(name, len(index))


def share_statements(
    effects: Sequence[Principle], evidence: Evidence, *, base: str = "of all cells"
) -> list[Principle]:
    """Restate effects drawn from `evidence`'s shares as a few general statements.

    Effects about one choice in one direction become one sentence across their positions; a
    position with a single preferred choice also absorbs the choices avoided only there. Effects
    with no statistic in `evidence` keep their text. Order and numbers are unchanged.
    """
    n_pos = len(evidence.stats)
    order = _position_order(evidence)
    stat: dict[int, ChoiceStat] = {}
    for i, p in enumerate(effects):
        s = evidence.stat(p.position, p.choice)
        if s is not None:
            stat[i] = s
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(effects):
        if i in stat:
            groups.setdefault((p.direction, p.choice), []).append(i)
    single_prefer = {effects[ix[0]].position: key for key, ix in groups.items() if key[0] == "prefer" and len(ix) == 1}
    folded: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, ix in groups.items():
        if key[0] == "avoid" and len(ix) == 1 and effects[ix[0]].position in single_prefer:
            folded.setdefault(single_prefer[effects[ix[0]].position], []).append(key)
    absorbed = {k for ks in folded.values() for k in ks}
    text: dict[int, str] = {}
    label = evidence.label
    for key, ix in groups.items():
        if key in absorbed:
            continue
        direction, choice = key
        positions = sorted((effects[i].position for i in ix), key=order)
        top = _pct([stat[i].top_share for i in ix])
        bs = _pct([stat[i].base_share for i in ix])
        edge = _EDGE.match(positions[0]) if len(positions) == 1 else None
        if direction == "prefer":
            if edge:
                t = f"Node {edge[1]} takes {choice} from node {edge[2]}: {top} of the top cells of {label} do, against {bs} {base}"
            else:
                t = f"The top cells of {label} favour {choice} {_where(positions, n_pos)}: {top} of them use it there, against {bs} {base}"
            others = [(k, ixs) for k in folded.get(key, []) for ixs in [groups[k]]]
            if others:
                names = [k[1] for k, _ in others]
                t += f"; {_and(names)} {'is' if len(names) == 1 else 'are'} rare there ({_pct([stat[i[0]].top_share for _, i in others])})"
        elif edge:
            t = f"Node {edge[1]} rarely takes {choice} from node {edge[2]} in the top cells of {label}: {top} against {bs} {base}"
        else:
            t = f"The top cells of {label} rarely use {choice} {_where(positions, n_pos)}: {top} of them against {bs} {base}"
        t = _fit(t + ".")
        for i in ix + [j for k in folded.get(key, []) for j in groups[k]]:
            text[i] = t
    return [p.model_copy(update={"text": text[i]}) if i in text else p for i, p in enumerate(effects)]


def effect_statements(effects: Sequence[Principle], evidence: Evidence) -> list[Principle]:
    """Restate effects drawn from `evidence`'s mean differences, one sentence per choice and direction."""
    n_pos = len(evidence.stats)
    order = _position_order(evidence)
    found: dict[tuple[str, str], ChoiceEffect] = {(e.position, e.choice): e for e in evidence.effects}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(effects):
        if (p.position, p.choice) in found:
            groups.setdefault((p.direction, p.choice), []).append(i)
    text: dict[int, str] = {}
    for (direction, choice), ix in groups.items():
        fx = [found[(effects[i].position, effects[i].choice)] for i in ix]
        t = _fit(
            f"On {evidence.label}, cells with {choice} {_where(sorted((e.position for e in fx), key=order), n_pos)} "
            f"score {_num([abs(e.effect) for e in fx])} std {'above' if direction == 'prefer' else 'below'} the "
            f"others (it is in {_num([e.n_with for e in fx], 'd')} of the {fx[0].n_cells} evaluated cells)."
        )
        for i in ix:
            text[i] = t
    return [p.model_copy(update={"text": text[i]}) if i in text else p for i, p in enumerate(effects)]


def generated_text(p: Principle, evidence: Evidence | None) -> str:
    """A plain sentence for one effect, from the evidence where it has the numbers."""
    s = evidence.stat(p.position, p.choice) if evidence else None
    where = "every position" if p.position == "*" else p.position
    if s is None:
        return f"{p.direction.capitalize()} {p.choice} at {where}."
    return _fit(
        f"{p.direction.capitalize()} {p.choice} at {where}: {s.top_share:.0%} of the top cells of {evidence.label} "
        f"use it there, against {s.base_share:.0%} of all cells."
    )


# ---------------------------------------------------------------------------------------------
# does a sentence say the opposite of its effect?
_NEGATIVE = re.compile(
    r"\b(avoid\w*|never|don'?t|do not|does not|not|no|without|remov\w*|drop\w*|exclud\w*|rare\w*|seldom|"
    r"hurt\w*|harm\w*|bad|worse|worst|poor\w*|fewer|less|lower|below|penali\w*|discard\w*|eliminat\w*)\b"
)
_POSITIVE = re.compile(
    r"\b(prefer\w*|use[sd]?|using|favou?r\w*|keep\w*|includ\w*|help\w*|best|better|good|dominat\w*|strong\w*|"
    r"carr(y|ies)|above|higher|more|most|takes?|common\w*|frequent\w*|benefit\w*|improv\w*|boost\w*)\b"
)
_CONTRAST = re.compile(r"\b(over|instead of|rather than|than|versus|vs\.?)\b")
_SYNONYMS = {"skip": ("identity", "residual", "shortcut"), "none": ("zero",), "conv": ("convolution",), "pool": ("pooling",)}
_GENERIC = {"nor", "connect", "op", "ops", "layer"}
_SIZE = re.compile(r"\d+x\d+")


def _mentions(clause: str, choice: str, choices: Sequence[str]) -> int:
    """Where `clause` mentions `choice` (by name, by family word like "pooling"), or -1."""
    name = choice.lower()
    m = re.search(r"\bnone\b(?! of)" if name == "none" else rf"(?<![\w]){re.escape(name)}(?![\w])", clause)
    if m:
        return m.start()
    parts = [t for t in choice.lower().split("_") if t and t not in _GENERIC]
    size = next((t for t in parts if _SIZE.fullmatch(t)), None)
    sizes_said = set(_SIZE.findall(clause))
    if sizes_said and size is not None and size not in sizes_said:
        return -1
    for word in parts:
        if _SIZE.fullmatch(word) or len(word) < 3 and word != "none":
            continue
        for w in (word, *_SYNONYMS.get(word, ())):
            pattern = r"\bnone\b(?! of)" if w == "none" else rf"\b{re.escape(w)}"
            m = re.search(pattern, clause)
            if m:
                return m.start()
    return -1


def text_direction(text: str, choice: str, choices: Sequence[str] = ()) -> str | None:
    """"prefer" or "avoid" as the sentence says it about `choice`, or None when it does not say."""
    said: set[str] = set()
    for clause in re.split(r"[.;:!?]|,\s|\bbut\b|\bwhile\b|\bwhereas\b", text.lower()):
        at = _mentions(clause, choice, choices)
        if at < 0:
            continue
        neg = bool(_NEGATIVE.search(clause))
        pos = bool(_POSITIVE.search(clause))
        if not (neg or pos):
            continue
        direction = "avoid" if neg else "prefer"
        contrast = _CONTRAST.search(clause)
        if contrast and contrast.start() < at:  # "prefer conv over pooling": pooling is the loser
            direction = "prefer" if direction == "avoid" else "avoid"
        said.add(direction)
    return said.pop() if len(said) == 1 else None


def contradicts_text(p: Principle, choices: Sequence[str] = ()) -> bool:
    said = text_direction(p.text, p.choice, choices)
    return said is not None and said != p.direction


def off_topic(p: Principle, choices: Sequence[str]) -> bool:
    """The sentence names other choices of the space but never the one its effect is about (a weak
    model's text pasted onto another effect: "Node 1 rarely takes skip_connect" on "avoid none")."""
    text = p.text.lower()
    if _mentions(text, p.choice, choices) >= 0:
        return False
    return any(_mentions(text, c, choices) >= 0 for c in choices if c != p.choice)


# ---------------------------------------------------------------------------------------------
# rendering: prompts and `show`
def _option(name: str, s: ChoiceStat | None) -> str:
    return name if s is None else f"{name} (top share {s.top_share:.0%}, share {s.base_share:.0%}, lift {s.lift:.2f})"


def render_evidence(stats: Sequence[Sequence[ChoiceStat]], costs: Sequence[Any] = ()) -> str:
    """Per position, the options ranked by evidence alone, with their shares (prompts, memory recall);
    with cost effects (`Evidence.costs`, a limit or cost objective is set), what each choice costs."""
    text = "\n".join(
        f"{col[0].position}: " + ", ".join(_option(col[c].choice, col[c]) for c in rank_column(len(col), col))
        for col in stats if col
    )
    if costs:
        big = sorted(costs, key=lambda c: -abs(c.share))[:12]
        text += "\ncosts (mean over the cells with the choice against those without):\n" + "\n".join(
            f"- {c.sentence()}" for c in big)
    return text


def render_options(space: SearchSpace, ranking: Sequence[Sequence[int]], stats: Sequence[Sequence[ChoiceStat]] | None) -> str:
    """Per position, the options in `ranking`'s order, with their shares where statistics exist."""
    lines = []
    for j, (pos, r) in enumerate(zip(space.positions, ranking)):
        col = stats[j] if stats and stats[j] else None
        lines.append(f"{pos.name}: " + ", ".join(_option(pos.choices[c], col[c] if col else None) for c in r))
    return "\n".join(lines)


def _effects_summary(effects: Sequence[Principle]) -> str:
    parts = []
    for (d, c), ps in _group(effects).items():
        pos = ", ".join(p.position for p in ps)
        parts.append(f"{d} {c} @ {pos} ({_num([p.confidence for p in ps])})")
    return "; ".join(parts)


def render_principles(principles: Sequence[Principle]) -> str:
    """For prompts: one line per statement, its effects in brackets."""
    if not principles:
        return "(none)"
    return "\n".join(f"- {st.text} [{_effects_summary(st.effects)}]" for st in PrincipleSet.of(principles).statements)


def render_statements(principles: Iterable[Principle | dict[str, Any]], *, limit: int = TUNING.max_statements_shown) -> list[str]:
    """What `show` prints for one round: at most `limit` statements, strongest first, each with
    its effects; then one line counting the rest. A record whose principles contradict each other
    (written before the check existed) is shown with a warning line first, never silently."""
    effects = [p if isinstance(p, Principle) else Principle(**p) for p in principles]
    if not effects:
        return []
    lines: list[str] = []
    try:
        statements = PrincipleSet(tuple(effects)).statements
    except PrincipleConflict as exc:
        lines.append(f"warning: {exc}")
        statements = PrincipleSet(tuple(resolve_conflicts(effects)[0])).statements
    ranked = sorted(statements, key=lambda st: -st.confidence)
    for st in ranked[:limit]:
        lines.append(f"{st.text}  [{_effects_summary(st.effects)}]")
    rest = ranked[limit:]
    if rest:
        n = sum(len(s.effects) for s in rest)
        lines.append(f"(+{len(rest)} weaker statement{'s' * (len(rest) > 1)} with {n} effect{'s' * (n > 1)}; "
                     "--json lists every effect)")
    return lines


def stat_text(s: ChoiceStat, label: str, base: str = "of all") -> str:
    """One choice's statistic as a principle's evidence line."""
    return (
        f"{label}: {s.top_count} of the top cells use {s.choice} at {s.position} "
        f"(top share {s.top_share:.0%} vs {s.base_share:.0%} {base}, lift {s.lift:.2f})"
    )
