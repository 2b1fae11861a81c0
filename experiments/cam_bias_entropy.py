"""P's entropy with and without the class bias in the CAM, for a trained checkpoint on its test split.

    python experiments/cam_bias_entropy.py <run folder or .ckpt> <cache folder of its data> [n_images]

P = ReLU(CAM of the true class), normalised over the h×w map; entropy / log(h·w) (1 = flat). A bias
added to every location (as the CAM had before) shifts the map before the ReLU and flattens P.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from jointcap import losses
from jointcap.analysis.explain import to_model_input
from jointcap.cli import find_checkpoint
from jointcap.data import cache
from jointcap.runtime.checkpoint import load_module


def main(path: str, data_dir: str, n: int = 500) -> None:
    module = load_module(find_checkpoint(path, prefer="best")).eval()
    split = cache.read_split(Path(data_dir) / "test")
    images = torch.from_numpy(np.array(split.images[:n])).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S) uint8
    labels = torch.from_numpy(split.labels[:n])
    with torch.no_grad():
        net = module.net
        assert net.classifier is not None, "a model with a classifier"
        emb = net.embed(to_model_input(module, images)).float()
        cam = net.cam(emb, labels)  # (B, h, w), no bias
        bias = net.classifier.fc.bias[labels].float()[:, None, None]
        for name, m in (("CAM without the class bias (now)", cam), ("CAM + class bias (before)", cam + bias)):
            p = losses.cam_distribution(m)
            h = losses.entropy(p) / math.log(p.shape[1])
            print(f"{name}: normalised entropy of P {h.mean():.4f} ± {h.std():.4f} over {len(labels)} test images")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
