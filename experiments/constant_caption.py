"""The 'best constant caption' baseline: the frequent training caption that, said of every
test image, scores the highest CIDEr-D. A captioner must beat it to show it looks at images.

    python experiments/constant_caption.py [data=… overrides]
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import jointcap.config  # noqa: F401  (registers the schema nodes the YAML configs build on)
from jointcap.metrics.baselines import best_constant_caption, frequent_captions

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("test")
    candidates = frequent_captions(dm.references("train"), top=300)
    caption, scores = best_constant_caption(candidates, dm.references("test"))
    print(f"best constant caption over {len(candidates)} frequent training captions: {caption!r}")
    for k, v in scores.items():
        print(f"  test/{k}: {v:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
