"""archlore.memory: a store of design principles from past tasks, with retrieval for transfer.
It knows nothing of agents."""
