"""The networks archlore can build: one module per model family, each with its builder.

A builder is `build(arch, shape, **options) -> nn.Module` (see `archlore.tools.builders`):
`nb201` (the NAS-Bench-201 cell network), `darts` (the DARTS evaluation network) and
`family` (`cnn`, `mlp`: plain networks for user spaces with depth/width/kernel/activation).
"""
