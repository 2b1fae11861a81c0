"""Can the captioner read the body colour when asked? Teacher-forced colour read-out at a body slot.

    python experiments/body_colour_readout.py <run folder or .ckpt> <cache folder of its data> [n_test]

For each test image the captioner is fed "this bird has <wing> <pattern> wings, a <head> head and a mostly"
(the true class template, then the references' "a mostly <colour> body" phrase) and its next-word distribution is
read over the colour names (their first sentencepiece): how often the true body colour ranks first, its mean
probability, and how much probability the captioner puts on going on ("and"/",") rather than ending (EOS, ".")
after the bare template. A captioner that cannot name the body colour when the words before ask for it cannot
be taught by a CIDEr-D reward to add it; one that can, but never goes on after the template, is a search problem.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from jointcap.analysis.explain import to_model_input
from jointcap.cli import find_checkpoint
from jointcap.data import cache
from jointcap.data.synthetic import COLOR_NAMES, dataset_info
from jointcap.data.tokenizer import BOS_ID, EOS_ID
from jointcap.runtime.checkpoint import load_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colour_probe import class_template, split_images  # noqa: E402


def _next_word_logp(module, images: torch.Tensor, prefixes: list[list[int]]) -> torch.Tensor:
    """log p(next piece | image, prefix) for each image: (B, V)."""
    width = max(map(len, prefixes))
    tokens = torch.tensor([[BOS_ID, *p] + [0] * (width - len(p)) for p in prefixes])  # (B, 1 + width)
    with torch.no_grad():
        out = module.net(to_model_input(module, images), torch.cat([tokens, tokens[:, :1]], 1))
    logp = out.word_logits.float().log_softmax(-1)  # (B, T, V): step t predicts token t + 1
    return logp[torch.arange(len(prefixes)), torch.tensor([len(p) for p in prefixes])]


def main(path: str, data_dir: str, n_test: int = 500) -> None:
    module = load_module(find_checkpoint(path, prefer="best")).eval()
    tok = module.tok
    test = cache.read_split(Path(data_dir) / "test")
    attrs = test.extra["attributes"]  # per image: body, beak, … (what varies inside a class)
    info = json.loads((Path(data_dir) / "info.json").read_text())  # the cache's own: works for a captioner alone too
    classes = dataset_info(int(info["num_classes"]))["class_attributes"]  # per class: head, wing, pattern
    first_piece = {c: tok.sp.encode(c)[0] for c in COLOR_NAMES}
    colours = [c for c in COLOR_NAMES if list(first_piece.values()).count(first_piece[c]) == 1]
    ids = torch.tensor([first_piece[c] for c in colours])
    go_on = [i for w in (" and", ",") for i in tok.sp.encode(w)[:1]]
    stop = [EOS_ID, *tok.sp.encode(".")[-1:]]
    hits, p_true, p_go, p_stop, n = 0, [], [], [], 0
    for i in range(0, n_test, 100):
        sel = range(i, min(n_test, i + 100))
        images = split_images(test, sel.start, sel.stop)
        templates = [class_template(classes[int(test.labels[j])]) for j in sel]
        body = [tok.sp.encode(t + " and a mostly") for t in templates]
        bare = [tok.sp.encode(t) for t in templates]
        lp = _next_word_logp(module, images, body)[:, ids]  # (B, C) over the colour names
        lp = lp - lp.logsumexp(1, keepdim=True)
        truth = torch.tensor([colours.index(attrs["body"][j]) if attrs["body"][j] in colours else -1 for j in sel])
        ok = truth >= 0
        hits += int((lp.argmax(1) == truth)[ok].sum())
        p_true += lp[ok].gather(1, truth[ok, None]).exp().squeeze(1).tolist()
        n += int(ok.sum())
        after = _next_word_logp(module, images, bare).exp()
        p_go += after[:, go_on].sum(1).tolist()
        p_stop += after[:, stop].sum(1).tolist()
    print(f"{n} test images, {len(colours)} colour names (chance {1 / len(colours):.3f})")
    print(f"body colour read at '… and a mostly ___': top-1 {hits / n:.3f}, mean p(true colour) {np.mean(p_true):.3f}")
    go, end = np.mean(p_go), np.mean(p_stop)
    print(f"after the bare template: p(go on: 'and' / ',') {go:.3f}, p(end: EOS / '.') {end:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
