"""``jbim-reid recipe``: what ``jbim.recipe`` resolves to on a config's training data, as JSON, without
training ("what will auto do on my data?"). It reads the data only and builds no model."""
import contextlib
import json
import sys
from typing import Callable, Dict, Tuple

from yacs.config import CfgNode as CN

from jbim_reid.training.recipe import recipe_record, resolve_recipe
from jbim_reid.training.runner import build_datamanager

__all__ = ["RECIPE_COMMANDS", "recipe_command"]


def recipe_command(cfg: CN) -> int:
    """Print ``{"mode", "chosen", "measured", "overridden", "dataset"}`` for ``cfg`` on stdout."""
    with contextlib.redirect_stdout(sys.stderr):  # torchreid's dataset summaries: keep stdout JSON only
        datamanager = build_datamanager(cfg)
    record = recipe_record(resolve_recipe(cfg, datamanager.train_loader.dataset))
    print(json.dumps({**record, "dataset": list(cfg.data.sources), "split_id": cfg.data.split_id}, indent=2))
    return 0


RECIPE_COMMANDS: Dict[str, Tuple[str, Callable[[CN], int]]] = {  # subcommand -> (help, function)
    "recipe": ("print as JSON the recipe jbim.recipe resolves to on the config's training data (mode, "
               "chosen keys, measured statistics, overridden keys), without training", recipe_command),
}
