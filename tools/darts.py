"""The DARTS search space (Liu et al., ICLR 2019; the third space of the LAPT paper).

A DARTS network stacks two kinds of cells, *normal* and *reduction*. Each cell has two input
nodes (0 and 1: the outputs of the two previous cells) and four intermediate nodes (2..5); each
intermediate node sums two ops applied to two distinct earlier nodes, and the cell outputs the
concatenation of nodes 2..5. There are 8 ops (`DARTS_OPS`).

As a categorical space (so every combination of choices is a valid cell, and every position has
at most 10 choices, one digit each in the digit string), node n of a cell is three positions:

- `normal.n{n}.inputs`: the pair of distinct inputs `a+b` with a < b < n, in colex order
  (`0+1`, `0+2`, `1+2`, `0+3` ...): 1, 3, 6 and 10 choices for nodes 2..5;
- `normal.n{n}.op_a`: the op on the lower input a; `normal.n{n}.op_b`: the op on the higher b;

and the same for `reduce.*`: 24 positions, about 9.1e18 architectures. The canonical string is
the genotype in DARTS's own notation (the two edges of a node listed lower input first):

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[...], reduce_concat=[2, 3, 4, 5])

`parse_genotype` reads that notation safely (Python's `ast`, never `eval`), including
`range(2, 6)` for the concat lists; `DartsSpace.from_genotype` maps a genotype (its edges in
any order within a node, as DARTS prints them) to the architecture, `to_genotype` back.
The space is far too large to enumerate: `all_archs` raises; sampling, mutation, neighbours and
filters never enumerate it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .errors import SpaceError
from .spaces import Arch, Position, SearchSpace, SpaceFilter

#: DARTS's operations, in the order of its PRIMITIVES list (the choice ids of the op positions).
DARTS_OPS = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
CELLS = ("normal", "reduce")
NODES = (2, 3, 4, 5)  # the intermediate nodes; 0 and 1 are the cell's inputs
CONCAT = NODES  # every intermediate node is concatenated into the cell's output
MAX_GENOTYPE_CHARS = 10_000

Edge = tuple[str, int]  # (op, input node)


def input_pairs(node: int) -> tuple[tuple[int, int], ...]:
    """The pairs (a, b), a < b < node, of distinct inputs of `node`, in colex order: the pair
    ids of earlier nodes keep their meaning at later ones ((0, 1) is id 0 everywhere)."""
    return tuple((a, b) for b in range(1, node) for a in range(b))


@dataclass(frozen=True)
class Genotype:
    """A DARTS genotype: per cell, 8 edges (op, input), two per intermediate node, in node order;
    and the nodes concatenated into the cell's output. Field names are DARTS's own, so code
    written for DARTS's namedtuple reads it unchanged."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for cell in CELLS:
            edges = getattr(self, cell)
            try:
                object.__setattr__(self, cell, tuple((str(op), int(i)) for op, i in edges))
                object.__setattr__(self, f"{cell}_concat", tuple(int(i) for i in getattr(self, f"{cell}_concat")))
            except (TypeError, ValueError):
                raise SpaceError(
                    f"the {cell} cell of a genotype needs a list of (op, input) pairs and a concat list of node numbers"
                ) from None

    def __str__(self) -> str:
        return (
            f"Genotype(normal={list(self.normal)!r}, normal_concat={list(self.normal_concat)!r}, "
            f"reduce={list(self.reduce)!r}, reduce_concat={list(self.reduce_concat)!r})"
        )


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _value(node: ast.expr, field: str) -> object:
    if (  # DARTS's search code prints the concat lists as range(2, 6)
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
        and not node.keywords and 1 <= len(node.args) <= 3
    ):
        args = [ast.literal_eval(a) for a in node.args]
        if all(isinstance(a, int) and not isinstance(a, bool) and abs(a) < 100 for a in args):
            return list(range(*args))
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise SpaceError(f"the genotype's {field} is not a literal list") from None


def parse_genotype(text: str) -> Genotype:
    """A `Genotype` from DARTS's notation `Genotype(normal=[...], normal_concat=[...],
    reduce=[...], reduce_concat=[...])` (fields by keyword or position). Safe: only literals
    and `range(...)` are read; nothing is evaluated."""
    if not isinstance(text, str):
        raise SpaceError(f"a genotype must be text, got {type(text).__name__}")
    text = text.strip()
    example = "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])"
    if len(text) > MAX_GENOTYPE_CHARS:
        raise SpaceError(f"the genotype text is {len(text)} characters long; a DARTS genotype is a few hundred")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise SpaceError(f"{text[:80]!r} is not a DARTS genotype like {example}") from None
    call = tree.body
    func = call.func if isinstance(call, ast.Call) else None
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name != "Genotype":
        raise SpaceError(f"{text[:80]!r} is not a DARTS genotype like {example}")
    assert isinstance(call, ast.Call)
    if len(call.args) > len(_FIELDS) or any(isinstance(a, ast.Starred) for a in call.args):
        raise SpaceError(f"a genotype has the four fields {', '.join(_FIELDS)}")
    values: dict[str, object] = {f: _value(a, f) for f, a in zip(_FIELDS, call.args)}
    for kw in call.keywords:
        if kw.arg not in _FIELDS:
            raise SpaceError(f"unknown genotype field {kw.arg!r}: use {', '.join(_FIELDS)}")
        if kw.arg in values:
            raise SpaceError(f"the genotype gives {kw.arg!r} twice")
        values[kw.arg] = _value(kw.value, kw.arg)
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        raise SpaceError(f"the genotype lacks {', '.join(missing)}")
    for f in _FIELDS:
        if not isinstance(values[f], (list, tuple)):
            raise SpaceError(f"the genotype's {f} must be a list, got {type(values[f]).__name__}")
        if f in CELLS and not all(isinstance(e, (list, tuple)) and len(e) == 2 for e in values[f]):  # type: ignore[union-attr]
            raise SpaceError(f"the genotype's {f} must list (op, input) pairs")
    return Genotype(**values)  # type: ignore[arg-type]


class DartsSpace(SearchSpace):
    """The DARTS cell space as 24 categorical positions (see the module docstring)."""

    def __init__(self) -> None:
        positions = []
        for cell in CELLS:
            for n in NODES:
                positions.append(Position(f"{cell}.n{n}.inputs", tuple(f"{a}+{b}" for a, b in input_pairs(n))))
                positions.append(Position(f"{cell}.n{n}.op_a", DARTS_OPS))
                positions.append(Position(f"{cell}.n{n}.op_b", DARTS_OPS))
        super().__init__(
            "darts", positions,
            "DARTS cells (normal and reduction): 4 nodes each summing 2 ops on 2 distinct earlier nodes; 8 ops",
        )

    # -- genotype <-> architecture -----------------------------------------------------------
    def to_genotype(self, arch: Arch) -> Genotype:
        arch = self.validate(arch)
        cells: dict[str, list[Edge]] = {}
        for c, cell in enumerate(CELLS):
            edges: list[Edge] = []
            for k, n in enumerate(NODES):
                base = 3 * (c * len(NODES) + k)
                a, b = input_pairs(n)[arch[base]]
                edges += [(DARTS_OPS[arch[base + 1]], a), (DARTS_OPS[arch[base + 2]], b)]
            cells[cell] = edges
        return Genotype(cells["normal"], CONCAT, cells["reduce"], CONCAT)

    def from_genotype(self, genotype: Genotype) -> Arch:
        """The architecture of a genotype; the two edges of a node may come in either order."""
        ids: list[int] = []
        for cell in CELLS:
            edges = getattr(genotype, cell)
            concat = getattr(genotype, f"{cell}_concat")
            if tuple(concat) != CONCAT:
                raise SpaceError(
                    f"the {cell} cell concatenates nodes {list(concat)}; the DARTS space concatenates {list(CONCAT)}"
                )
            if len(edges) != 2 * len(NODES):
                raise SpaceError(f"the {cell} cell has {len(edges)} edges; a DARTS cell has {2 * len(NODES)} (2 per node)")
            for k, n in enumerate(NODES):
                (op_a, a), (op_b, b) = sorted(edges[2 * k : 2 * k + 2], key=lambda e: e[1])
                for op in (op_a, op_b):
                    if op not in DARTS_OPS:
                        raise SpaceError(f"unknown op {op!r} in the {cell} cell: use one of {', '.join(DARTS_OPS)}")
                if a == b:
                    raise SpaceError(f"node {n} of the {cell} cell takes input {a} twice: the DARTS space keeps 2 distinct inputs")
                if not 0 <= a < b < n:
                    raise SpaceError(f"node {n} of the {cell} cell takes input {b if b >= n else a}: use nodes 0..{n - 1}")
                ids += [input_pairs(n).index((a, b)), DARTS_OPS.index(op_a), DARTS_OPS.index(op_b)]
        return tuple(ids)

    def to_string(self, arch: Arch) -> str:
        return str(self.to_genotype(arch))

    def from_string(self, key: str) -> Arch:
        return self.from_genotype(parse_genotype(key))

    # -- no enumeration ----------------------------------------------------------------------
    def all_archs(self) -> Iterator[Arch]:
        raise SpaceError(
            f"the DARTS space holds {self.size():.2e} architectures and cannot be enumerated: "
            "sample it, mutate, take neighbours, or enumerate a small SpaceFilter's members"
        )

    # -- filters -----------------------------------------------------------------------------
    def op_filter(self, ops: Iterable[str], *, cells: Sequence[str] = CELLS,
                  flt: SpaceFilter | None = None) -> SpaceFilter:
        """`flt` (default: the whole space) with the op positions of `cells` narrowed to `ops`."""
        ops = list(ops)
        unknown = [op for op in ops if op not in DARTS_OPS]
        if unknown or not ops:
            raise SpaceError(f"unknown op(s) {', '.join(unknown) or '(none given)'}: use {', '.join(DARTS_OPS)}")
        bad = [c for c in cells if c not in CELLS]
        if bad:
            raise SpaceError(f"unknown cell(s) {', '.join(bad)}: use normal, reduce")
        allowed = list((flt or self.full_filter()).allowed)
        keep = {DARTS_OPS.index(op) for op in ops}
        for j, p in enumerate(self.positions):
            if p.name.split(".")[0] in cells and p.name.endswith((".op_a", ".op_b")):
                allowed[j] = tuple(c for c in allowed[j] if c in keep)
        return SpaceFilter(tuple(allowed)).check(self)


#: The published DARTS (second order) cell: DARTS_V2 of darts/cnn/genotypes.py (Liu et al. 2019).
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)
