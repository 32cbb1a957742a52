"""CrossResolutionMatcher with stand-in anchors and with a real tiny JBIM checkpoint."""
import math

import numpy as np
import pytest
import torch
import torchreid
from synthetic import person_image
from torch import nn

from jbim_reid.deploy.matcher import CrossResolutionMatcher, MatchResult
from jbim_reid.utils.images import build_test_transform, load_rgb


class MeanColourAnchor(nn.Module):
    """Stand-in anchor: the feature of an image is its mean colour per channel (times ``scale``)."""

    def __init__(self, ratio: float, scale: float = 1.0, height: int = 16, width: int = 8):
        super().__init__()
        self.ratio, self.scale, self.height, self.width = ratio, scale, height, width
        self.dummy = nn.Parameter(torch.zeros(1))

    def probe_features(self, x):
        return self.scale * x.mean(dim=(2, 3))

    def gallery_features(self, x, hw=None):
        return self.scale * x.mean(dim=(2, 3)) + self.dummy


def gallery_images(num_ids=4, size=(64, 32)):
    return [np.asarray(person_image(pid, size)) for pid in range(num_ids)]


def reference_distances(anchor, probes, gallery):
    transform = build_test_transform(anchor.height, anchor.width)
    with torch.no_grad():
        qf = anchor.probe_features(torch.stack([transform(load_rgb(p)) for p in probes]))
        gf = anchor.gallery_features(torch.stack([transform(load_rgb(g)) for g in gallery]))
    return torchreid.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()


def test_single_anchor_ranks_same_identity_first(tmp_path):
    gallery = gallery_images()
    probe_path = tmp_path / "probe.png"
    person_image(2, (16, 8), seed=5).save(probe_path)
    probes = [probe_path, person_image(0, (32, 16), seed=7), np.asarray(person_image(3, (20, 10), seed=9))]
    result = CrossResolutionMatcher([MeanColourAnchor(0.5)]).match(probes, gallery)
    assert isinstance(result, MatchResult)
    assert result.distances.shape == (3, 4) and result.ranking.shape == (3, 4)
    np.testing.assert_array_equal(result.ranking[:, 0], [2, 0, 3])
    np.testing.assert_array_equal(result.weights, np.ones((3, 1)))
    # genuine sizes from the inputs: areas 128, 512, 200 against a gallery of 64 x 32 = 2048
    np.testing.assert_allclose(result.ratios, [math.sqrt(128 / 2048), 0.5, math.sqrt(200 / 2048)])
    np.testing.assert_allclose(result.distances, reference_distances(MeanColourAnchor(0.5), probes, gallery),
                               rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.take_along_axis(result.distances, result.ranking, axis=1), axis=1) >= 0)


def test_two_anchors_fuse_with_gaussian_weights():
    gallery = gallery_images(num_ids=3, size=(64, 32))
    probes = [person_image(1, (32, 16), seed=3), person_image(2, (16, 8), seed=4)]  # r = 1/2, 1/4
    anchors = [MeanColourAnchor(0.5, scale=1.0), MeanColourAnchor(0.25, scale=3.0)]
    result = CrossResolutionMatcher(anchors, sigma=0.5).match(probes, gallery)
    expected_w = np.array([[1.0, math.exp(-0.25)], [math.exp(-0.25), 1.0]])
    np.testing.assert_allclose(result.ratios, [0.5, 0.25])
    np.testing.assert_allclose(result.weights, expected_w, rtol=1e-12)
    d1, d2 = (reference_distances(a, probes, gallery) for a in anchors)
    np.testing.assert_allclose(result.distances, expected_w[:, :1] * d1 + expected_w[:, 1:] * d2, rtol=1e-5)
    uniform = CrossResolutionMatcher(anchors, weighting="uniform").match(probes, gallery)
    np.testing.assert_allclose(uniform.distances, d1 + d2, rtol=1e-5)


def test_batches_do_not_change_results():
    gallery = gallery_images(num_ids=5)
    probes = [person_image(p, (20, 10), seed=p) for p in range(5)]
    full = CrossResolutionMatcher([MeanColourAnchor(0.5)], batch_size=32).match(probes, gallery)
    small = CrossResolutionMatcher([MeanColourAnchor(0.5)], batch_size=2).match(probes, gallery)
    np.testing.assert_allclose(full.distances, small.distances, rtol=1e-6, atol=1e-7)


def test_errors_name_the_input(tmp_path):
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(FileNotFoundError, match=r"checkpoints\[1\]: checkpoint file not found: .*nope.pth.tar"):
        CrossResolutionMatcher([MeanColourAnchor(0.5), missing])
    with pytest.raises(ValueError, match="checkpoints is empty"):
        CrossResolutionMatcher([])
    with pytest.raises(TypeError, match=r"checkpoints\[0\] \(Linear\) lacks"):
        CrossResolutionMatcher([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="Unknown weighting 'median'"):
        CrossResolutionMatcher([MeanColourAnchor(0.5)], weighting="median")
    matcher = CrossResolutionMatcher([MeanColourAnchor(0.5)])
    gallery = gallery_images(2)
    with pytest.raises(ValueError, match="probes is empty"):
        matcher.match([], gallery)
    with pytest.raises(ValueError, match="gallery is empty"):
        matcher.match(gallery, [])
    with pytest.raises(FileNotFoundError, match=r"probes\[1\]: image file not found: .*ghost.jpg"):
        matcher.match([gallery[0], tmp_path / "ghost.jpg"], gallery)
    with pytest.raises(ValueError, match=r"gallery\[0\] must be an H x W x 3 uint8 RGB array, got shape \(4, 4\)"):
        matcher.match(gallery, [np.zeros((4, 4), dtype=np.uint8)])
    with pytest.raises(TypeError, match="probes must be a list of images"):
        matcher.match(gallery[0], gallery)


def test_real_tiny_jbim_checkpoint(tmp_path):
    from jbim_reid.models import JBIM

    torch.manual_seed(0)
    model = JBIM(num_classes=3, backbone="osnet_x0_25", ratio=0.5, height=64, width=32).eval()
    state = {"state_dict": model.state_dict(), "epoch": 1, "jbim_kwargs": model.jbim_kwargs}
    torchreid.utils.save_checkpoint(state, str(tmp_path / "half"))
    path = tmp_path / "half" / "model.pth.tar-1"
    gallery = [person_image(pid, (128, 64), seed=1) for pid in range(3)]
    probes = [person_image(pid, (32, 16), seed=2) for pid in range(2)]

    result = CrossResolutionMatcher([str(path)], batch_size=2).match(probes, gallery)
    transform = build_test_transform(64, 32)
    with torch.no_grad():
        qf = model.probe_features(torch.stack([transform(p) for p in probes]))
        # down_m shrinks the genuine 128x64 gallery images, not the 64x32 network tensors
        gf = model.gallery_features(torch.stack([transform(g) for g in gallery]),
                                    torch.tensor([[128, 64]] * len(gallery)))
    expected = torchreid.metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
    np.testing.assert_allclose(result.distances, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(result.weights, np.ones((2, 1)))
    np.testing.assert_allclose(result.ratios, [0.25, 0.25])

    # a second anchor from memory next to the checkpoint: each anchor's ratio comes from its model
    quarter = JBIM(num_classes=3, backbone="osnet_x0_25", ratio=0.25, height=64, width=32)
    assert CrossResolutionMatcher([path, quarter]).ratios == [0.5, 0.25]
