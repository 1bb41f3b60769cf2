"""Categorical search spaces and the filters that refine them.

An architecture is a tuple of choice ids, one per named position (`Arch`). A space converts it to
and from its canonical string (the key stored everywhere: the NB201 arch string, the TransNAS
`64-41414-a_bc_def` string, or a user space's digit string) and to LM-Searcher's digit string (one
digit per position). A `SpaceFilter` keeps, per position, the choices a planner allows; sampling
and mutation never leave it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from .errors import ConfigError, FilterError, SpaceError, SpaceExhausted

Arch = tuple[int, ...]

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Position:
    """One decision of a space: its name and the names of its choices (ids are indices)."""

    name: str
    choices: tuple[str, ...]

    def id_of(self, choice: str | int) -> int:
        """The id of a choice given by name, or by id (an int, or a digit string).

        A name always wins: where a choice is itself named like a number (`depth: [2, 4, 8]`),
        a digit string is read as a name only, so "4" is depth 4, never the id 4.
        """
        if isinstance(choice, str) and choice in self.choices:
            return self.choices.index(choice)
        by_id = isinstance(choice, (int, np.integer)) and not isinstance(choice, bool)
        if isinstance(choice, str) and choice.isdigit() and choice.isascii():
            by_id = not any(c.isdigit() for c in self.choices)
        if by_id:
            idx = int(choice)
            if not 0 <= idx < len(self.choices):
                raise SpaceError(
                    f"choice id {idx} is out of range for position {self.name!r}: "
                    f"use 0..{len(self.choices) - 1}"
                )
            return idx
        raise SpaceError(
            f"unknown choice {choice!r} at position {self.name!r}: "
            f"use one of {', '.join(self.choices)}"
        )


class SearchSpace:
    """A categorical space: named positions, each with its choices.

    Subclasses override `to_string`/`from_string` for their canonical key; everything else
    (size, index, sampling, mutation, neighbours, digit strings) works for every space.
    """

    def __init__(self, name: str, positions: Sequence[Position], description: str = "") -> None:
        if not positions:
            raise ConfigError(f"space {name!r} has no positions: give at least one")
        for p in positions:
            if not p.choices:
                raise ConfigError(f"position {p.name!r} of space {name!r} has no choices")
            if len(set(p.choices)) != len(p.choices):
                raise ConfigError(f"position {p.name!r} of space {name!r} repeats a choice")
        if len({p.name for p in positions}) != len(positions):
            raise ConfigError(f"space {name!r} repeats a position name")
        self.name = name
        self.positions: tuple[Position, ...] = tuple(positions)
        self.description = description
        self.columns: dict[str, str] = {}  # a user table's column roles (`column_roles`)
        self._radix = tuple(len(p.choices) for p in self.positions)
        self.model: dict[str, object] | None = None  # a space file's `model:` entry (`model_entry`)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self.positions)} positions, size={self.size()})"

    # -- basic facts -------------------------------------------------------------------------
    def size(self) -> int:
        return math.prod(self._radix)

    @property
    def radix(self) -> tuple[int, ...]:
        return self._radix

    def full_filter(self) -> SpaceFilter:
        return SpaceFilter(tuple(tuple(range(n)) for n in self._radix))

    def validate(self, arch: Sequence[int]) -> Arch:
        if len(arch) != len(self._radix):
            raise SpaceError(
                f"architecture has {len(arch)} choices but space {self.name!r} has "
                f"{len(self._radix)} positions"
            )
        out = tuple(int(a) for a in arch)
        for a, n, p in zip(out, self._radix, self.positions):
            if not 0 <= a < n:
                raise SpaceError(f"choice id {a} is out of range at {p.name!r}: use 0..{n - 1}")
        return out

    def index(self, arch: Arch) -> int:
        """Mixed-radix index of an architecture (first position most significant)."""
        idx = 0
        for a, n in zip(arch, self._radix):
            idx = idx * n + a
        return idx

    def from_index(self, idx: int) -> Arch:
        out = []
        for n in reversed(self._radix):
            idx, a = divmod(idx, n)
            out.append(a)
        return tuple(reversed(out))

    def all_archs(self) -> Iterator[Arch]:
        return product(*(range(n) for n in self._radix))

    # -- encodings ---------------------------------------------------------------------------
    def to_string(self, arch: Arch) -> str:
        """Canonical key; the default is the digit string."""
        return self.to_digits(arch)

    def from_string(self, key: str) -> Arch:
        return self.from_digits(key)

    def to_digits(self, arch: Arch) -> str:
        if max(self._radix) > len(_DIGITS):
            raise SpaceError(f"space {self.name!r} has more than {len(_DIGITS)} choices at a position")
        return "".join(_DIGITS[a] for a in self.validate(arch))

    def from_digits(self, digits: str) -> Arch:
        digits = digits.strip()
        if len(digits) != len(self._radix):
            raise SpaceError(
                f"digit string {digits!r} has {len(digits)} digits; space {self.name!r} needs "
                f"{len(self._radix)} (one per position)"
            )
        ids = []
        for ch in digits.lower():
            if ch not in _DIGITS:
                raise SpaceError(f"digit string {digits!r} has the invalid character {ch!r}")
            ids.append(_DIGITS.index(ch))
        return self.validate(ids)

    def from_names(self, text: str) -> Arch:
        """Choice names joined with '-', one per position, e.g. `4-gelu` (names may hold '-')."""
        text = text.strip()
        parses = self._name_parses(text)
        if len(parses) == 1:
            return parses[0]
        if len(parses) > 1:
            shown = " or ".join(json.dumps(self.describe(a)) for a in parses[:2])
            raise SpaceError(
                f"{text!r} splits into choice names in more than one way ({shown}): "
                "write it as a JSON list of names instead"
            )
        parts = text.split("-")
        if len(parts) != len(self.positions):
            raise SpaceError(
                f"{text!r} has {len(parts)} '-'-separated names; space {self.name!r} needs "
                f"{len(self.positions)} (one per position: {', '.join(p.name for p in self.positions)})"
            )
        for p, part in zip(self.positions, parts):
            if part not in p.choices:
                raise SpaceError(
                    f"unknown choice {part!r} at position {p.name!r} in {text!r}: use one of {', '.join(p.choices)}"
                )
        raise SpaceError(f"{text!r} is not one choice name per position joined with '-'")  # pragma: no cover

    def _name_parses(self, text: str) -> list[Arch]:
        """At most two ways to split `text` into one choice name per position (memoised)."""
        n = len(self.positions)

        @functools.lru_cache(maxsize=None)
        def parses(at: int, j: int) -> tuple[Arch, ...]:
            if j == n:
                return ((),) if at == len(text) else ()
            out: list[Arch] = []
            for c, name in enumerate(self.positions[j].choices):
                end = at + len(name)
                if not text.startswith(name, at):
                    continue
                if j == n - 1:
                    out += [(c,)] if end == len(text) else []
                elif text.startswith("-", end):
                    out += [(c, *rest) for rest in parses(end + 1, j + 1)]
                if len(out) > 1:
                    break
            return tuple(out[:2])

        return list(parses(0, 0))

    def from_name_list(self, names: Sequence[object]) -> Arch:
        """A list of choice names, one per position (numbers are read as names, e.g. 4 -> "4")."""
        if len(names) != len(self.positions):
            raise SpaceError(
                f"the list {json.dumps(names, default=str)[:200]} has {len(names)} names; space "
                f"{self.name!r} needs {len(self.positions)} (one per position)"
            )
        ids = []
        for p, name in zip(self.positions, names):
            if isinstance(name, (dict, list)) or name is None:
                raise SpaceError(f"position {p.name!r} needs a choice name, got {json.dumps(name)[:80]}")
            key = str(name).strip() if not isinstance(name, bool) else str(name).lower()
            if key not in p.choices:
                raise SpaceError(f"unknown choice {key!r} at position {p.name!r}: use one of {', '.join(p.choices)}")
            ids.append(p.choices.index(key))
        return tuple(ids)

    def parse(self, text: str) -> Arch:
        """An architecture from any of its text forms.

        Accepted: the canonical string (`to_string`: the NB201 arch string, the TransNAS
        `64-41414-a_bc_def` string, a user space's digit string); the digit string (one
        character 0-9a-z per position, the choice id); the choice names joined with '-'
        (`4-gelu`); a JSON list of choice names (`["4", "gelu"]`). A digit string that is
        too short and all digits is reported as one that lost its leading zeros.
        """
        if not isinstance(text, str):
            raise SpaceError(f"an architecture must be text, got {type(text).__name__}")
        text = text.strip()
        n = len(self.positions)
        if not text:
            raise SpaceError("the architecture is empty: give its digit string, canonical string or choice names")
        if text.startswith("["):
            try:
                names = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise SpaceError(f"{text[:80]!r} starts like a JSON list but is not valid JSON") from None
            if not isinstance(names, list):
                raise SpaceError(f"{text[:80]!r} is not a JSON list of choice names")
            return self.from_name_list(names)
        try:
            arch = self.from_string(text)
        except SpaceError as exc:
            canonical_error = exc
        else:
            if n == 1 and text in self.positions[0].choices and self.from_names(text) != arch:
                p = self.positions[0]
                raise SpaceError(
                    f"{text!r} is ambiguous at {p.name!r}: the id {text} is {p.choices[arch[0]]!r} but there "
                    f'is also a choice named {text!r}; write ["{text}"] for the name'
                )
            return arch
        digits = text[:-2] if text.endswith(".0") else text
        if digits.isascii() and digits.isdigit() and len(digits) < n:
            raise SpaceError(
                f"{text!r} has {len(digits)} digits but space {self.name!r} needs {n}: it looks like a "
                f"digit string that lost its leading zero(s) (a spreadsheet stored it as a number; it "
                f"would be {digits.zfill(n)!r}); store the column as text"
            )
        for form in (self.from_digits, self.from_names):
            try:
                return form(text)
            except SpaceError:
                pass
        if (n > 1 and len(text.split("-")) == n) or len(self._name_parses(text)) > 1:
            self.from_names(text)  # raises the specific error: which name is unknown, or ambiguity
        if (text.isascii() and text.isdigit()) or (len(text) == n and not set(text) & set("|~-[]")):
            self.from_digits(text)  # raises the specific error: which digit is invalid
        if type(self).from_string is not SearchSpace.from_string:
            raise canonical_error
        raise SpaceError(
            f"{text[:80]!r} is not an architecture of space {self.name!r}: give the digit string "
            f"(e.g. {self.to_digits((0,) * n)!r}), the choice names joined with '-' (e.g. "
            f"{'-'.join(p.choices[0] for p in self.positions)[:80]!r}) or a JSON list of names"
        )

    def describe(self, arch: Arch) -> dict[str, str]:
        return {p.name: p.choices[a] for p, a in zip(self.positions, arch)}

    # -- moves -------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, flt: SpaceFilter | None = None) -> Arch:
        allowed = (flt or self.full_filter()).allowed
        return tuple(int(c[rng.integers(len(c))]) for c in allowed)

    def mutate(self, arch: Arch, rng: np.random.Generator, flt: SpaceFilter | None = None) -> Arch:
        """Change one position to another allowed choice (positions with one choice stay)."""
        allowed = (flt or self.full_filter()).allowed
        arch = flt.project(arch, rng) if flt is not None else arch
        movable = [i for i, c in enumerate(allowed) if len(c) > 1]
        if not movable:
            return arch
        i = movable[rng.integers(len(movable))]
        others = [c for c in allowed[i] if c != arch[i]]
        out = list(arch)
        out[i] = int(others[rng.integers(len(others))])
        return tuple(out)

    def neighbours(self, arch: Arch, flt: SpaceFilter | None = None) -> list[Arch]:
        allowed = (flt or self.full_filter()).allowed
        out = []
        for i, choices in enumerate(allowed):
            for c in choices:
                if c != arch[i]:
                    out.append(arch[:i] + (c,) + arch[i + 1 :])
        return out


@dataclass(frozen=True)
class SpaceFilter:
    """The allowed choice ids per position: a refined search space."""

    allowed: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", tuple(tuple(sorted(set(int(c) for c in a))) for a in self.allowed))

    @classmethod
    def from_choices(cls, space: SearchSpace, choices: Sequence[Iterable[str | int]]) -> SpaceFilter:
        """Build from choice names or ids per position, validating against the space."""
        if len(choices) != len(space.positions):
            raise FilterError(
                f"filter has {len(choices)} positions but space {space.name!r} has "
                f"{len(space.positions)}"
            )
        try:
            ids = [tuple(p.id_of(c) for c in cs) for p, cs in zip(space.positions, choices)]
        except SpaceError as exc:
            raise FilterError(str(exc)) from None
        flt = cls(tuple(ids))
        flt.check(space)
        return flt

    def check(self, space: SearchSpace) -> SpaceFilter:
        if len(self.allowed) != len(space.radix):
            raise FilterError(
                f"filter has {len(self.allowed)} positions but space {space.name!r} has "
                f"{len(space.radix)}"
            )
        for p, a, n in zip(space.positions, self.allowed, space.radix):
            if not a:
                raise FilterError(f"filter leaves position {p.name!r} empty: allow at least one choice")
            if a[0] < 0 or a[-1] >= n:
                raise FilterError(f"filter has a choice id out of range at {p.name!r}: use 0..{n - 1}")
        return self

    def size(self) -> int:
        return math.prod(len(a) for a in self.allowed)

    def contains(self, arch: Arch) -> bool:
        return all(a in c for a, c in zip(arch, self.allowed))

    def project(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Replace choices the filter forbids with a random allowed one."""
        return tuple(a if a in c else int(c[rng.integers(len(c))]) for a, c in zip(arch, self.allowed))

    def members(self) -> Iterator[Arch]:
        return product(*self.allowed)

    def names(self, space: SearchSpace) -> dict[str, list[str]]:
        return {p.name: [p.choices[c] for c in a] for p, a in zip(space.positions, self.allowed)}

    def to_json(self) -> list[list[int]]:
        return [list(a) for a in self.allowed]


def sample_unseen(
    space: SearchSpace,
    rng: np.random.Generator,
    seen: set[Arch] | frozenset[Arch],
    flt: SpaceFilter | None = None,
    *,
    tries: int = 64,
) -> Arch:
    """A random architecture in the filter that is not in `seen`.

    Rejection sampling first; when that keeps failing, enumerate the filter (bounded by its size)
    and pick among the unseen members; when there are none, raise SpaceExhausted. Never spins.
    """
    flt = flt or space.full_filter()
    for _ in range(tries):
        arch = space.sample(rng, flt)
        if arch not in seen:
            return arch
    if flt.size() > 2_000_000:
        raise SpaceExhausted(
            f"could not find an unseen architecture in {tries} samples of a filter of size "
            f"{flt.size()}; widen the filter"
        )
    unseen = [a for a in flt.members() if a not in seen]
    if not unseen:
        raise SpaceExhausted(
            f"all {flt.size()} architectures allowed by the filter are evaluated; widen the filter"
        )
    return unseen[rng.integers(len(unseen))]


# ---------------------------------------------------------------------------------------------
# NAS-Bench-201
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
# NASLib's orders: ops skip, none, conv3x3, conv1x1, pool; edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4)
# with nodes numbered from 1, i.e. our edges 0,1,3,2,4,5.
_NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
_NASLIB_EDGE_ORDER = (0, 1, 3, 2, 4, 5)


class NB201Space(SearchSpace):
    """NAS-Bench-201: a cell of 4 nodes, 6 edges, 5 ops per edge (15,625 cells)."""

    def __init__(self) -> None:
        super().__init__(
            "nb201",
            [Position(f"edge{e}", NB201_OPS) for e in NB201_EDGES],
            "NAS-Bench-201 cell: node j sums op(node i) over i<j; 6 edges x 5 ops",
        )

    def to_string(self, arch: Arch) -> str:
        a = [NB201_OPS[i] for i in self.validate(arch)]
        return f"|{a[0]}~0|+|{a[1]}~0|{a[2]}~1|+|{a[3]}~0|{a[4]}~1|{a[5]}~2|"

    def from_string(self, key: str) -> Arch:
        key = key.strip()
        nodes = key.split("+")
        if len(nodes) != 3:
            raise SpaceError(
                f"{key!r} is not an NB201 arch string: expected 3 node groups like "
                "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|"
            )
        ids: list[int] = []
        for j, group in enumerate(nodes):
            edges = [e for e in group.strip("|").split("|") if e]
            if len(edges) != j + 1:
                raise SpaceError(f"{key!r}: node {j + 1} needs {j + 1} edges, got {len(edges)}")
            for i, edge in enumerate(edges):
                op, _, src = edge.partition("~")
                if src != str(i):
                    raise SpaceError(f"{key!r}: edge {edge!r} should come from node {i}")
                if op not in NB201_OPS:
                    raise SpaceError(f"unknown op {op!r} in {key!r}: use one of {', '.join(NB201_OPS)}")
                ids.append(NB201_OPS.index(op))
        return tuple(ids)

    @staticmethod
    def from_naslib(op_indices: Sequence[int]) -> Arch:
        """Convert NASLib's op-index tuple (its op and edge order) to our choice ids."""
        if len(op_indices) != 6:
            raise SpaceError(f"a NASLib NB201 tuple has 6 entries, got {len(op_indices)}")
        out = [0] * 6
        for naslib_pos, ours in enumerate(_NASLIB_EDGE_ORDER):
            op = int(op_indices[naslib_pos])
            if not 0 <= op < 5:
                raise SpaceError(f"NASLib op index {op} is out of range 0..4")
            out[ours] = NB201_OPS.index(_NASLIB_OPS[op])
        return tuple(out)

    @staticmethod
    def to_naslib(arch: Arch) -> tuple[int, ...]:
        return tuple(_NASLIB_OPS.index(NB201_OPS[arch[ours]]) for ours in _NASLIB_EDGE_ORDER)


# ---------------------------------------------------------------------------------------------
# TransNAS-Bench-101 micro
TNB101_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")


class TNB101Space(SearchSpace):
    """TransNAS-Bench-101 micro: an NB201-like cell with 6 edges x 4 ops (4,096 cells)."""

    prefix = "64-41414-"

    def __init__(self) -> None:
        super().__init__(
            "tnb101",
            [Position(f"edge{e}", TNB101_OPS) for e in NB201_EDGES],
            "TransNAS-Bench-101 micro cell: node j sums op(node i) over i<j; 6 edges x 4 ops",
        )

    def to_string(self, arch: Arch) -> str:
        d = "".join(str(a) for a in self.validate(arch))
        return f"{self.prefix}{d[0]}_{d[1:3]}_{d[3:6]}"

    def from_string(self, key: str) -> Arch:
        key = key.strip()
        if not key.startswith(self.prefix):
            raise SpaceError(f"{key!r} is not a TransNAS micro string like 64-41414-3_13_221")
        parts = key[len(self.prefix) :].split("_")
        if [len(p) for p in parts] != [1, 2, 3]:
            raise SpaceError(f"{key!r}: the cell part must look like a_bc_def (6 digits)")
        return self.from_digits("".join(parts))


# ---------------------------------------------------------------------------------------------
# user-defined spaces
MAX_NAME_LENGTH = 40  # principles name a position and a choice in at most 40 characters
MAX_POSITIONS = 200
MAX_CHOICES = len(_DIGITS)  # one digit 0-9a-z per position in the canonical string


def _yaml_loader() -> type:
    """A safe YAML loader that refuses a mapping repeating a key (PyYAML keeps the last one)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            if isinstance(node, yaml.MappingNode):
                seen: dict[tuple[type, object], int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *base` may be overridden on purpose
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get((type(key), key))
                    except TypeError:
                        continue  # an unhashable key: the base constructor says so
                    if first is not None:
                        raise _DuplicateKey(str(key), line, first)
                    seen[(type(key), key)] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first: int | None) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


def _json_duplicate(text: str, key: str) -> tuple[int, int | None]:
    """(line, first line) of the first JSON object that repeats `key`: a small scan of valid JSON."""
    stack: list[dict[str, int] | None] = []  # None for an array
    i, line, n = 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch in "{[":
            stack.append({} if ch == "{" else None)
        elif ch in "}]":
            stack.pop()
        elif ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            obj = stack[-1] if stack else None
            if k < n and text[k] == ":" and obj is not None:
                name = json.loads(text[i : j + 1])
                if name == key and name in obj:
                    return line, obj[name]
                obj.setdefault(name, line)
            i = j
        i += 1
    return 1, None  # pragma: no cover - only called once json found the duplicate


def _read_structured(path: Path) -> object:
    """YAML or JSON (by suffix) from a file, refusing repeated keys; errors are one line."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"space file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"space file {path} cannot be read ({exc.strerror or exc}): pass a readable file") from None
    try:
        if path.suffix.lower() == ".json":
            def no_repeats(pairs: list[tuple[str, object]]) -> dict:
                out: dict = {}
                for k, v in pairs:
                    if k in out:
                        raise _DuplicateKey(k, *_json_duplicate(text, k))
                    out[k] = v
                return out

            return json.loads(text, object_pairs_hook=no_repeats)
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        first = f" (first at line {dup.first})" if dup.first else ""
        raise ConfigError(
            f"space file {path} repeats the key {dup.key!r} at line {dup.line}{first}: "
            "keep one (a repeated key would silently replace the first)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"space file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x) or "syntax error"
        raise ConfigError(f"space file {path} is not valid YAML: {what}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"space file {path} is not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise ConfigError(f"space file {path} could not be read: {type(exc).__name__}: {str(exc)[:120]}") from None


def _scalar_name(value: object, what: str, path: Path) -> str:
    if isinstance(value, bool) or value is None:
        raise ConfigError(
            f"space file {path}: {what} must be a plain name, got {json.dumps(value)} (YAML reads an unquoted "
            "yes, no, true, false, on, off, null or ~ as that): quote it, e.g. 'no'"
        )
    if isinstance(value, (list, dict)):
        raise ConfigError(f"space file {path}: {what} must be a plain name, got {json.dumps(value, default=str)[:60]}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"space file {path}: {what} must be a plain name, got {value}")
    name = str(value).strip()
    if not name:
        raise ConfigError(f"space file {path}: {what} is empty: give it a name")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"space file {path}: {what} {name[:50]!r}... is {len(name)} characters long: use at most "
            f"{MAX_NAME_LENGTH} (principles name positions and choices in at most {MAX_NAME_LENGTH})"
        )
    if any(not ch.isprintable() for ch in name):
        raise ConfigError(f"space file {path}: {what} {name!r} holds a control character: use printable text")
    return name


def load_space_file(path: str | Path) -> SearchSpace:
    """A user space from YAML or JSON: `{name, description?, positions, columns?}`.

    `columns` gives the results table's columns roles (`column_roles`: max, min, cost, ignore).

    `positions` is a list of `{name: ..., choices: [...]}` or a mapping `name: [choices]`.
    Names are plain text or numbers (read as text: `depth: [2, 4, 8]` has the choices "2",
    "4", "8"), at most 40 characters, no repeats; at most 36 choices per position (the
    canonical string has one digit 0-9a-z per position) and at most 200 positions. A key
    repeated in a mapping is an error naming the key and its line, not a silent overwrite.
    An optional `model:` entry names the builder that trains its candidates (`model_entry`).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"space file {path} does not exist: pass the path of a YAML or JSON file")
    if path.is_dir():
        raise ConfigError(f"space file {path} is a directory: pass the path of a YAML or JSON file")
    raw = _read_structured(path)
    if not isinstance(raw, dict) or "positions" not in raw:
        raise ConfigError(f"space file {path} needs a top-level 'positions' list, e.g. positions: {{depth: [2, 4], act: [relu, gelu]}}")
    unknown = sorted(str(k) for k in raw if k not in {"name", "description", "positions", "columns", "model"})
    if unknown:
        raise ConfigError(f"space file {path} has unknown key(s) {', '.join(unknown)}: use name, description, positions, columns, model")
    pos = raw["positions"]
    if isinstance(pos, dict):
        pos = [{"name": k, "choices": v} for k, v in pos.items()]
    if not isinstance(pos, list) or not pos:
        raise ConfigError(f"space file {path}: 'positions' must be a non-empty list or mapping of positions")
    if len(pos) > MAX_POSITIONS:
        raise ConfigError(f"space file {path} has {len(pos)} positions: at most {MAX_POSITIONS} are supported")
    positions = []
    for i, p in enumerate(pos):
        if not isinstance(p, dict) or "name" not in p or "choices" not in p or set(p) - {"name", "choices"}:
            raise ConfigError(f"space file {path}: position {i + 1} needs exactly 'name' and a list of 'choices'")
        name = _scalar_name(p["name"], f"position {i + 1}'s name", path)
        choices = p["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(
                f"space file {path}: the choices of position {name!r} must be a non-empty list, "
                f"e.g. [relu, gelu], got {json.dumps(choices, default=str)[:60]}"
            )
        if len(choices) > MAX_CHOICES:
            raise ConfigError(f"space file {path}: position {name!r} has {len(choices)} choices; at most {MAX_CHOICES}")
        names = tuple(_scalar_name(c, f"a choice of position {name!r}", path) for c in choices)
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise ConfigError(f"space file {path}: position {name!r} repeats the choice(s) {', '.join(repeated)}")
        positions.append(Position(name, names))
    repeated = sorted({p.name for p in positions if [q.name for q in positions].count(p.name) > 1})
    if repeated:
        raise ConfigError(f"space file {path} repeats the position name(s) {', '.join(repeated)}")
    title = raw.get("name", path.stem)
    description = raw.get("description", "")
    if not isinstance(title, (str, int, float)) or isinstance(title, bool) or not str(title).strip():
        raise ConfigError(f"space file {path}: 'name' must be a non-empty string")
    if not isinstance(description, str):
        raise ConfigError(f"space file {path}: 'description' must be a string")
    space = SearchSpace(str(title).strip(), positions, description)
    space.columns = column_roles(raw.get("columns"), path)
    space.model = model_entry(raw.get("model"), path)
    return space


def model_entry(raw: object, path: Path) -> dict[str, object] | None:
    """The `model:` entry of a space file: how a candidate becomes a network when training.

    `model: cnn` (a builder name: nb201, darts, cnn, mlp), `model: mypkg.nets:build` (the user's
    own builder, `build(arch, shape, **options)`), or the long form
    `model: {builder: cnn, options: {width: 64}}`. Returned as `{"builder": str, "options": dict}`;
    the builder itself is resolved (imported, its signature checked) by `tools.builders`.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"builder": raw}
    if not isinstance(raw, dict) or set(raw) - {"builder", "options"} or "builder" not in raw:
        raise ConfigError(
            f"space file {path}: 'model' must be a builder name (nb201, darts, cnn, mlp, or package.module:function) "
            "or {builder: NAME, options: {...}}"
        )
    builder = raw["builder"]
    if not isinstance(builder, str) or not builder.strip():
        raise ConfigError(f"space file {path}: model's 'builder' must be a name like cnn or package.module:function")
    options = raw.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"space file {path}: model's 'options' must be a mapping of option names to values, e.g. {{width: 64}}")
    return {"builder": builder.strip(), "options": dict(options)}


COLUMN_ROLES = ("max", "min", "cost", "ignore")


def column_roles(raw: object, path: Path) -> dict[str, str]:
    """The `columns:` entry of a space file: what each results-table column is.

    `columns: {accuracy: max, error: min, params: cost, flops: cost, notes: ignore}`; the long
    form `{role: metric, direction: min}` is accepted too. `max`/`min` are metrics (tasks) with
    their direction, `cost` a cost (a limit with --max, an objective with --objective), `ignore`
    a column the run never reads. Unlisted numeric columns are higher-is-better metrics.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"space file {path}: 'columns' must be a mapping, e.g. columns: {{error: min, params: cost}}")
    roles: dict[str, str] = {}
    for name, spec in raw.items():
        col = _scalar_name(name, "a column name", path)
        if isinstance(spec, dict):
            kind = str(spec.get("role", "metric")).lower()
            direction = str(spec.get("direction", "max")).lower()
            if set(spec) - {"role", "direction"} or kind not in {"metric", "cost", "ignore", "ignored"}:
                raise ConfigError(f"space file {path}: column {col!r} needs role: metric|cost|ignore (and direction: max|min for a metric)")
            role = direction if kind == "metric" else ("ignore" if kind.startswith("ignore") else kind)
        else:
            role = {"ignored": "ignore", "maximize": "max", "minimize": "min", "metric": "max"}.get(str(spec).lower(), str(spec).lower())
        if role not in COLUMN_ROLES:
            raise ConfigError(
                f"space file {path}: column {col!r} has the role {spec!r}: use max (a metric, higher is better), "
                "min (lower is better), cost or ignore"
            )
        roles[col] = role
    return roles


def get_space(name: str) -> SearchSpace:
    """A built-in space by name, or a user space from a .yaml/.yml/.json path."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in {"nb201", "nasbench201"}:
        return NB201Space()
    if key in {"tnb101", "transnas", "transnasbench101", "transnas101"}:
        return TNB101Space()
    if key == "darts":
        from .darts import DartsSpace  # tools.darts builds on this module

        return DartsSpace()
    if name.endswith((".yaml", ".yml", ".json")):
        return load_space_file(name)
    raise ConfigError(f"unknown space {name!r}: use nb201, tnb101, darts or a .yaml/.json space file")
