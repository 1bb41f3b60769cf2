"""archlore.benchmarks: the benchmark harness (protocols, strategy registry, baselines, plots).

`run_bench` runs a protocol (`lapt-nb201`, `lapt-tnb101`, `curves`, `custom`) for a list of
strategies over declared seeds and writes FILE.json, FILE.md and FILE.png. Strategies see the
source's validation values and the target's executor only (`access`); the harness scores them.
Strategies plug in with `register_strategy`, or by a module `archlore.benchmarks.strategies_<name>`
that registers itself when first asked for.
"""

from .access import LeakageError, TargetAccess
from .harness import (
    STRATEGIES,
    StrategyFn,
    StrategyInfo,
    StrategyRequest,
    get_strategy,
    make_request,
    markdown,
    register_strategy,
    run_bench,
    run_strategy,
)
from .protocols import (
    DEFAULT_BUDGETS,
    PROTOCOL_NAMES,
    PROTOCOLS,
    SEED_SPLITS,
    Protocol,
    get_protocol,
    seed_range,
)

__all__ = [
    "DEFAULT_BUDGETS",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "SEED_SPLITS",
    "STRATEGIES",
    "LeakageError",
    "Protocol",
    "StrategyFn",
    "StrategyInfo",
    "StrategyRequest",
    "TargetAccess",
    "get_protocol",
    "get_strategy",
    "make_request",
    "markdown",
    "register_strategy",
    "run_bench",
    "run_strategy",
    "seed_range",
]
