"""archlore.tools: a small NAS library (search spaces, filters, benchmarks, executors, ledger,
strategies, evidence). It knows nothing of agents or LLMs."""
