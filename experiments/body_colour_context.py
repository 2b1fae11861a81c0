"""Is the body colour in what the captioner reads when it must name it, and how fast could a read-out learn it?

    python experiments/body_colour_context.py <run folder or .ckpt> <cache folder of its data> [n_train] [n_test]

Teacher-forces "this bird has <wing> <pattern> wings, a <head> head and a mostly" (the true class template, then the
references' body phrase, as experiments/body_colour_readout.py does) and takes, at the step that must emit the body
colour, the captioner's attention and its gated context vector ẑ_t (what the word is predicted from). Prints the
attention's mass on the body's cells, the share of ẑ_t's variance the body colour explains, a linear probe of ẑ_t
(standardised, full batch: what ẑ_t holds) and the same read-out learnt the way the captioner learns (Adam at the
model's learning rate 1e-3, 16 examples a step, raw and standardised ẑ_t; test accuracy after 100 / 300 / 1,000
steps): the default run's cross-entropy phase gives a body colour word ~16 examples a step for ~1,000 steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jointcap.analysis.explain import to_model_input
from jointcap.cli import find_checkpoint
from jointcap.data import cache
from jointcap.data.synthetic import PART_NAMES, dataset_info
from jointcap.data.tokenizer import BOS_ID
from jointcap.runtime.checkpoint import load_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colour_probe import class_template, fit_logistic, split_images, standardise  # noqa: E402


def _at_colour_step(module, split: cache.SplitData, classes: list[dict], n: int):
    """(contexts (N, D), attention mass on the body's cells (N,)) at the step after "… and a mostly"."""
    captioner, tok = module.net.captioner, module.tok
    if split.masks is None:
        raise SystemExit("the split has no part masks: the body's cells need them")
    contexts, mass = [], []
    for i in range(0, n, 100):
        sel = range(i, min(n, i + 100))
        images = split_images(split, sel.start, sel.stop)
        prefixes = [tok.sp.encode(class_template(classes[int(split.labels[j])]) + " and a mostly") for j in sel]
        width = max(map(len, prefixes))
        tokens = torch.tensor([[BOS_ID, *p] + [0] * (width - len(p)) for p in prefixes])  # (B, 1 + width)
        last = torch.tensor([len(p) for p in prefixes])  # the step whose input is "mostly"'s last piece
        with torch.no_grad():
            (feats, feats_proj), state = captioner.prepare(module.net.embed(to_model_input(module, images)))
            words = captioner.embed(tokens)
            ctx, alpha = torch.zeros(len(sel), feats.shape[-1]), torch.zeros(len(sel), feats.shape[1])
            for t in range(words.shape[1]):
                a, c, state = captioner._recur(words[:, t], feats, feats_proj, state)
                ctx[last == t], alpha[last == t] = c[last == t], a[last == t]
        body = torch.from_numpy(np.array(split.masks[sel.start : sel.stop, PART_NAMES.index("body")])).float()[:, None]
        side = int(round(feats.shape[1] ** 0.5))
        cells = (F.adaptive_avg_pool2d(body, side).flatten(1) > 0.2).float()  # (B, L) cells ≥ 20 % body
        contexts.append(ctx)
        mass += (alpha * cells).sum(1).tolist()
    return torch.cat(contexts), np.array(mass)


def main(path: str, data_dir: str, n_train: int = 2000, n_test: int = 500) -> None:
    torch.set_num_threads(1)
    module = load_module(find_checkpoint(path, prefer="best")).eval()
    if module.net.captioner is None:
        raise SystemExit(f"{path}: no captioner")
    data = Path(data_dir)
    classes = dataset_info(int(json.loads((data / "info.json").read_text())["num_classes"]))["class_attributes"]
    train, test = cache.read_split(data / "train"), cache.read_split(data / "test")
    colours = sorted(set(train.extra["attributes"]["body"]))
    y = torch.tensor([colours.index(c) for c in train.extra["attributes"]["body"][:n_train]])
    yt = torch.tensor([colours.index(c) for c in test.extra["attributes"]["body"][:n_test]])
    x, mass = _at_colour_step(module, train, classes, n_train)
    xt, mass_t = _at_colour_step(module, test, classes, n_test)
    k = len(colours)
    means = torch.stack([x[y == c].mean(0) for c in range(k)])
    share = (means - x.mean(0)).pow(2).sum(1) @ torch.bincount(y, minlength=k).float() / len(y) / x.var(0).sum()
    zs, zst = standardise(x, xt)
    print(f"{n_train} train / {n_test} test images, {k} body colours (chance {1 / k:.3f})")
    print(f"attention on the body's cells at the colour step: train {mass.mean():.3f}, test {mass_t.mean():.3f}")
    print(f"share of the context's variance the body colour explains: {float(share):.3f}")
    full = fit_logistic(zs, y, zst, yt, k, 0.05, (300,), None)[0]
    print(f"linear probe of the context (standardised, full batch, 300 steps): {full:.3f}")
    steps = (100, 300, 1000)
    for name, (a, b) in {"raw": (x, xt), "standardised": (zs, zst)}.items():
        accs = fit_logistic(a, y, b, yt, k, 1e-3, steps, 16)
        print(
            f"read-out learnt like the captioner ({name}, Adam 1e-3, 16 a step), after {steps}: "
            + " / ".join(f"{v:.3f}" for v in accs)
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:5]))
