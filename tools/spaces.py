"""Categorical search spaces and the filters that refine them.

An architecture is a tuple of choice ids, one per named position (`Arch`). A space converts it to
and from its canonical string (the key stored everywhere: the NB201 arch string, the TransNAS
`64-41414-a_bc_def` string, or a user space's digit string) and to LM-Searcher's digit string (one
digit per position). A `SpaceFilter` keeps, per position, the choices a planner allows; sampling
and mutation never leave it.
"""

from __future__ import annotations

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
        if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
            idx = int(choice)
            if not 0 <= idx < len(self.choices):
                raise SpaceError(
                    f"choice id {idx} is out of range for position {self.name!r}: "
                    f"use 0..{len(self.choices) - 1}"
                )
            return idx
        try:
            return self.choices.index(choice)
        except ValueError:
            raise SpaceError(
                f"unknown choice {choice!r} at position {self.name!r}: "
                f"use one of {', '.join(self.choices)}"
            ) from None


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
        self._radix = tuple(len(p.choices) for p in self.positions)

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

    def parse(self, text: str) -> Arch:
        """Accept the canonical string or a digit string."""
        text = text.strip()
        try:
            return self.from_string(text)
        except SpaceError:
            if len(text) == len(self._radix):
                return self.from_digits(text)
            raise

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
def load_space_file(path: str | Path) -> SearchSpace:
    """A user space from YAML or JSON: {name, description?, positions: [{name, choices: [...]}]}.

    `positions` may also be a mapping name -> choices.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"space file {path} does not exist: pass the path of a YAML or JSON file")
    try:
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"space file {path} is not valid YAML/JSON: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict) or "positions" not in raw:
        raise ConfigError(f"space file {path} needs a top-level 'positions' list")
    pos = raw["positions"]
    if isinstance(pos, dict):
        pos = [{"name": k, "choices": v} for k, v in pos.items()]
    try:
        positions = [Position(str(p["name"]), tuple(str(c) for c in p["choices"])) for p in pos]
    except (KeyError, TypeError):
        raise ConfigError(
            f"space file {path}: each position needs 'name' and a list of 'choices'"
        ) from None
    return SearchSpace(str(raw.get("name", path.stem)), positions, str(raw.get("description", "")))


def get_space(name: str) -> SearchSpace:
    """A built-in space by name, or a user space from a .yaml/.yml/.json path."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in {"nb201", "nasbench201"}:
        return NB201Space()
    if key in {"tnb101", "transnas", "transnasbench101", "transnas101"}:
        return TNB101Space()
    if name.endswith((".yaml", ".yml", ".json")):
        return load_space_file(name)
    raise ConfigError(f"unknown space {name!r}: use nb201, tnb101 or a .yaml/.json space file")
