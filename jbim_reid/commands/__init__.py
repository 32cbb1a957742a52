"""The ``jbim-reid`` subcommands: train / test / complexity, recipe, train-anchors / ensemble, weights,
export-weights, export and index.

Each module adds its entries to ``jbim_reid.cli.COMMANDS`` through a dict of its own. The top layer below
``jbim_reid.cli``: it may import every subpackage below it (deploy, training, engines, datasets,
evaluation, models, metrics, config, utils) and no module imports it but the CLI.
"""
