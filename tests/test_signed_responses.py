"""Residual branches end at a batch norm, so node values can be negative: delta uses |d^h|.

docs/METHOD.md sections 4 and 8: degrees and delta are taken over all arcs with ``|d^h|``. Without the
absolute value a node whose class degrees have mixed signs gets an "entropy" below 0 or above
ln t (seen on a ResNet-20: -190 and 2.36 > ln 10), which would decide the pruning.
"""

from __future__ import annotations

import numpy as np
import torch

from cnngraph.datasets import ImageDataset
from cnngraph.mapping import reference
from cnngraph.mapping.api import map_model
from cnngraph.models import ModelSpec, build_model


def test_resnet_branch_ends_give_signed_values_and_scores_stay_in_range() -> None:
    torch.manual_seed(3)
    model = build_model(ModelSpec("resnet20", 4, 3, 16, 0.5)).eval()
    with torch.no_grad():  # trained-looking batch norms: shifted outputs of both signs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    images = torch.rand(16, 3, 16, 16)
    data = ImageDataset(images, torch.arange(16) % 4, ["a", "b", "c", "d"], "signed")
    net = map_model(model, data, images_per_class=4, device="cpu")
    total = reference.degrees(net).total
    assert (net.values("mean") < 0).any() and (total < 0).any()  # the case exercises the signs
    delta = reference.node_scores(net)
    np.testing.assert_allclose(delta, reference.score(np.abs(total), "entropy", absolute=False))
    assert (delta >= 0).all() and (delta <= np.log(4) + 1e-9).all()
    signed = reference.score(total, "entropy", absolute=False)
    assert ((signed < -1e-9) | (signed > np.log(4) + 1e-9)).any()  # what |d^h| prevents
