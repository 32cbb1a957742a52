"""The benchmark's methods that follow the data: ``jbim_auto`` (the recipe ``jbim.recipe auto`` resolves to
on the split) and ``jbim_warm`` (that recipe started from the split's converged plain + random
resolution model, ``jbim.init_from``, with stage-1 epochs searched over :data:`STAGE1_LADDER`).

``jbim_auto`` resolves to one of the recorded variants (``jbim`` on CAVIAR, ``jbim_xstream_multiratio`` on
MLR-VIPeR) and shares its stages, so its runs are those of that variant. ``jbim_warm``'s stages carry the
plain model's epochs in their names (``him_warm_m1-2_w27_e6``) and start from its kept checkpoint.
"""
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional

from accuracy_methods import ANCHORS, VARIANTS, base_of, described, variant_of
from accuracy_runs import SplitRunner, Stage, _with, stage_name

from jbim_reid.evaluation.ensemble import ratio_label
from jbim_reid.training.recipe import PAPER_RECIPE, choose_recipe, measure_training_data

__all__ = ["AUTO_METHOD", "WARM_METHOD", "STAGE1_LADDER", "recipe_variant", "BenchmarkSplitRunner"]

AUTO_METHOD, WARM_METHOD = "jbim_auto", "jbim_warm"
STAGE1_LADDER = (0, 6, 12)  # stage-1 epochs of jbim_warm, searched with the paired plateau rule


def recipe_variant(chosen: Mapping[str, object]) -> str:
    """The key of :data:`VARIANTS` whose ``jbim.*`` settings are exactly the recipe ``chosen`` (e.g. ``''``
    for the paper's, ``'xstream_multiratio'``)."""
    overrides = {k: v for k, v in chosen.items() if PAPER_RECIPE.get(k) != v}
    for key, variant in VARIANTS.items():
        plain_variant = not (variant.resaug or variant.genuine_ratio or variant.auto or variant.warm
                             or variant.shares_lim)
        if plain_variant and dict(variant.jbim) == overrides:
            return key
    raise RuntimeError(f"no benchmark variant trains the recipe {dict(chosen)}")


@dataclass
class BenchmarkSplitRunner(SplitRunner):
    """:class:`SplitRunner` with the data-driven methods ``jbim_auto`` and ``jbim_warm``."""

    _auto: Optional[str] = None

    def auto_variant(self) -> str:
        """The variant ``jbim.recipe auto`` resolves to on this split's training data (measured once)."""
        if self._auto is None:
            dataset = self.datamanager().train_loader.dataset
            self._auto = recipe_variant(choose_recipe(measure_training_data(dataset)))
            self.progress(f"  jbim.recipe auto -> {'jbim' + (f'_{self._auto}' if self._auto else '')}")
        return self._auto

    def auto_method(self) -> str:
        """``jbim_auto`` as the method key it resolves to, e.g. ``jbim_xstream_multiratio``."""
        variant = self.auto_variant()
        return f"jbim_{variant}" if variant else "jbim"

    def kept_plain(self, epochs: int) -> Stage:
        """The split's plain + random resolution model at ``epochs``, with its checkpoint on disk: reused
        from the records when its file is still there, else trained (again) and kept."""
        name = stage_name("plain", variant="resaug", e=epochs)
        old = self.stage_records.get(name, {})
        if name not in self.stages and old.get("checkpoint") and os.path.isfile(old["checkpoint"]):
            self.progress(f"  stage {name}: reused ({old['checkpoint']})")
            self.stages[name] = Stage(None, old["seconds"], old["epochs"], old["checkpoint"])
        stage = self.plain(epochs, True)
        if not (stage.checkpoint and os.path.isfile(stage.checkpoint)):  # trained without keeping its model
            del self.stages[name]
            stage = self.plain(epochs, True)
        return stage

    def warm_stage1(self, part: str, spec: Mapping[str, int]) -> Stage:
        """Stage ``him`` or ``lim`` of the auto recipe from the kept plain model; 0 epochs only tests and
        saves that initialisation."""
        variant, plain = self.auto_variant(), self.kept_plain(spec["plain"])
        ratio = ANCHORS[0] if part == "him" else None
        sr = self.sr(ANCHORS[0], variant) if part == "him" else None
        deps = (self._name(plain),) + ((self._name(sr),) if sr else ())
        name = stage_name(f"{part}_warm", ratio, variant, w=spec["plain"], e=spec[part])
        cfg = _with(self.cfg, spec[part], variant, ratio=ANCHORS[0], init_from=plain.checkpoint)
        return self._jbim_stage(name, f"{part.upper()} from {self._name(plain)}{described(variant)}", cfg, part,
                                part, suffix=variant, sr=sr, deps=deps, train_epochs=spec[part] > 0)

    def warm_joint(self, spec: Mapping[str, int]) -> Stage:
        """The joint stage from the warm-started stage-1 models."""
        variant = self.auto_variant()
        him, lim = self.warm_stage1("him", spec), self.warm_stage1("lim", spec)
        name = stage_name("joint_warm", ANCHORS[0], variant, w=spec["plain"], h=spec["him"], l=spec["lim"],
                          e=spec["joint"])
        return self._jbim_stage(name, f"JBIM joint, m={ratio_label(ANCHORS[0])}, from {self._name(him)} + "
                                f"{self._name(lim)}", _with(self.cfg, spec["joint"], variant, ratio=ANCHORS[0]),
                                "joint", "jbim", him, lim, deps=(self._name(him), self._name(lim)), suffix=variant)

    def _direct_stages(self, method: str, spec: Mapping[str, int]) -> List[Stage]:
        if method == WARM_METHOD:
            return [self.warm_joint(spec)]
        if VARIANTS[variant_of(method)].auto and base_of(method) == "jbim":
            return super()._direct_stages(self.auto_method(), spec)
        return super()._direct_stages(method, spec)
