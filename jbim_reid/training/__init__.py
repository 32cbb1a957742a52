"""Running the staged recipe from a config: config loading and checks, datamanager and model building,
one stage at a time (``runner``), the recipe that ``jbim.recipe auto`` resolves from the data
(``recipe``), per-stage skip and resume (``resume``) and stage ``sr`` (``sr_stage``).

May import engines, datasets, evaluation, models, metrics, config and utils; never deploy or commands.
"""
