"""archlore.memory: a store of design principles from past tasks, with retrieval for transfer.
It knows nothing of agents.

- ``record``: the principle, task, outcome and provenance models; the encoding version.
- ``store``: ``open_store`` and ``PrincipleStore`` (remember, recall, query, list, forget, import, export).
- ``aggregate``: how the contributions of many runs make one stored principle (pure).
- ``taskindex``: one entry per task (description, data tasks), what recall reads first.
- ``ranking``: how recall scores and bounds principles (pure).
- ``exchange``: the export file format.
- ``backends``: a local folder under a file lock, or a ``chroma run`` server.
- ``migrate``: bringing a memory written by an older archlore up to date.
- ``embeddings`` and ``minilm``: MiniLM (NumPy, no torch) and hash embeddings.
- ``location``: the default memory folder; ``errors``: the exceptions.
"""
