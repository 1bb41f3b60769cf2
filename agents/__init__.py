"""archlore.agents: the analyst, the planner, the LangGraph state machine, LLM backends and the
CLI. It composes archlore.tools and archlore.memory."""
