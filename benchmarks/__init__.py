"""archlore.benchmarks: the benchmark harness (protocols, strategy registry, plots).

`run_bench` runs a protocol (`lapt-nb201`, `lapt-tnb101`, `curves`) for a list of strategies and
writes FILE.json, FILE.md and FILE.png. Strategies plug in with `register_strategy`, or by a
module `archlore.benchmarks.strategies_<name>` that registers itself when first asked for.
"""

from .harness import (
    STRATEGIES,
    StrategyFn,
    StrategyRequest,
    get_strategy,
    markdown,
    register_strategy,
    run_bench,
    run_strategy,
)
from .protocols import DEFAULT_BUDGETS, PROTOCOL_NAMES, PROTOCOLS, BenchProtocol, get_protocol

__all__ = [
    "DEFAULT_BUDGETS",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "STRATEGIES",
    "BenchProtocol",
    "StrategyFn",
    "StrategyRequest",
    "get_protocol",
    "get_strategy",
    "markdown",
    "register_strategy",
    "run_bench",
    "run_strategy",
]
