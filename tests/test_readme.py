"""The README's main-job block and its torchreid-style Python script, run as written."""
import re
from pathlib import Path

import pytest
import torch
import torchreid
from synthetic import make_caviar

README = Path(__file__).parent.parent / "README.md"


def fenced_blocks(language: str):
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_first_block_installs_runs_the_main_job_and_the_tests():
    first = re.search(r"^```\w*\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S).group(1)
    assert first.splitlines() == [
        'pip install -e ".[dev]" && jbim-reid train --config-file configs/caviar/jbim_mobilenetv2_cpu.yaml',
        "pytest -q",
    ]
    assert (README.parent / "configs" / "caviar" / "jbim_mobilenetv2_cpu.yaml").is_file()


@pytest.mark.slow
def test_readme_torchreid_script_runs_with_local_weights_through_jbim_options(tmp_path):
    scripts = [b for b in fenced_blocks("python") if "jbim_options(" in b]
    assert len(scripts) == 1, "the README shows one torchreid-style script with jbim_options"
    root = make_caviar(tmp_path / "data", num_two_cam=8, num_one_cam=0)
    weights = tmp_path / "osnet_x0_25.pth"
    backbone = torchreid.models.build_model("osnet_x0_25", num_classes=1000, pretrained=False)
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    torch.save(state, weights)
    # only sizes, paths and the backbone change: a tiny CPU run of the script as written
    values = {
        "root='reid-data'": f"root={str(root)!r}, workers=0",
        "height=256, width=128": "height=32, width=16",
        "batch_size_train=32": "batch_size_train=8",
        "num_instances=4": "num_instances=2",
        "'weights/resnet50-19c8e357.pth'": repr(str(weights)),
        "'jbim_resnet50'": "'jbim_osnet_x0_25'",
        "max_epoch=60": "max_epoch=1",
        "'log/jbim_resnet50'": repr(str(tmp_path / "log")),
    }
    code = scripts[0]
    for old, new in values.items():
        assert old in code, f"README script no longer contains {old}"
        code = code.replace(old, new)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    model, engine = namespace["model"], namespace["engine"]
    assert model.ratio == 0.5 and model.jbim_kwargs["backbone"] == "osnet_x0_25"
    assert (tmp_path / "log" / "visrank_caviar").is_dir()
    assert set(engine.last_results) == {"caviar"}
    # the weights came from the local file (training moved them a little, not back to random)
    start = state["conv1.conv.weight"]
    for branch in (model.him, model.lim):
        drift = (branch.backbone.conv1.conv.weight.detach() - start).abs().mean()
        assert drift < 0.05 * start.abs().mean()
