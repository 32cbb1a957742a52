"""Registration with torchreid: model factory, engine attribute, idempotent re-import."""
import importlib

import torchreid

import jbim_reid
from jbim_reid import registry
from jbim_reid.engines import JBIMEngine
from jbim_reid.models import JBIM, MODEL_BUILDERS
from jbim_reid.utils import compat


def test_builders_are_in_torchreid_model_factory(capsys):
    factory = compat.model_factory()
    for name in ("jbim_resnet50", "jbim_osnet_x1_0", "jbim_osnet_x0_25", "jbim_mobilenetv2_x1_0"):
        assert factory[name] is MODEL_BUILDERS[name]
    torchreid.models.show_avai_models()
    listed = capsys.readouterr().out
    assert "jbim_resnet50" in listed and "jbim_osnet_x1_0" in listed


def test_build_model_through_torchreid():
    model = torchreid.models.build_model("jbim_osnet_x0_25", num_classes=6, pretrained=False)
    assert isinstance(model, JBIM) and model.lim.classifier.out_features == 6


def test_engine_is_reachable_from_torchreid():
    assert torchreid.engine.JBIMEngine is JBIMEngine


def test_registration_is_idempotent_on_reimport():
    factory = compat.model_factory()
    before = dict(factory)
    registry.register_all()
    importlib.reload(jbim_reid)
    assert dict(factory) == before
    assert torchreid.engine.JBIMEngine is JBIMEngine
