"""MTCNN's output network (ONet) as an ``Encoder``: real trained weights that work offline.

The facenet-pytorch wheel ships the trained ONet (``facenet_pytorch/data/onet.pt``); its declared pins
conflict with this project's torch, so only that file is used (install the wheel with ``--no-deps``) and the
architecture is defined here. ONet scores 48 x 48 RGB face crops; its representation is the 256-d layer
before the three task heads (face score, box, landmarks), which are dropped. MTCNN feeds it
``(255 x - 127.5) / 128`` of [0, 1] pixels: mean 127.5/255 and std 128/255 here.
"""

from __future__ import annotations

from torch import nn

from synbench.encoders.base import Encoder
from synbench.encoders.weights import existing_file, load_or_random, packaged_file, seeded

WHEEL = ("facenet-pytorch", "facenet_pytorch/data/onet.pt", "pip install --no-deps facenet-pytorch==2.6.0")
HEADS = ("dense6_1", "dense6_2", "dense6_3")
INPUT_SHAPE = (3, 48, 48)


class ONet(nn.Module):
    """Four conv + PReLU stages (max-pooled with ceil mode after the first three), then a 256-unit dense
    layer. The dense layer was trained on the conv map flattened in (W, H, C) order, as the original Caffe
    model stored it, so the map is permuted before flattening."""

    def __init__(self):
        super().__init__()
        for i, (c_in, c_out, k) in enumerate([(3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2)], start=1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size=k))
            setattr(self, f"prelu{i}", nn.PReLU(c_out))
        self.pools = nn.ModuleList([nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, ceil_mode=True),
                                    nn.MaxPool2d(2, 2, ceil_mode=True), nn.Identity()])  # no weights
        self.dense5 = nn.Linear(128 * 3 * 3, 256)
        self.prelu5 = nn.PReLU(256)

    def forward(self, x):
        for i, pool in enumerate(self.pools, start=1):
            x = pool(getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x)))
        return self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))


def load_onet(name: str, pretrained: bool, checkpoint: str | None, init_seed: int) -> Encoder:
    """ONet with the wheel's trained weights (``pretrained``), a local file, or a seeded random init."""
    path = existing_file(checkpoint, "an ONet state dict such as facenet_pytorch/data/onet.pt")
    if path is None and pretrained:
        path = packaged_file(*WHEEL)
    with seeded(init_seed):
        net = ONet()
    weights = load_or_random(net, path, name, init_seed, head=HEADS)
    mean, std = [127.5 / 255] * 3, [128 / 255] * 3
    identity = {"backend": "onet", "name": name, "weights": weights, "input_shape": list(INPUT_SHAPE),
                "mean": mean, "std": std}
    return Encoder(net, INPUT_SHAPE, mean, std, identity, value_range=(0.0, 1.0))
