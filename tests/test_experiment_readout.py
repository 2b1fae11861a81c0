"""experiments/body_colour_readout.py reads the word right after the prefix (teacher forcing), not one step off."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from tests.conftest import load_script


def _readout_module():
    return load_script("body_colour_readout")


class _EchoNet(torch.nn.Module):
    """A captioner whose prediction at each step is its input word there: logits (B, T-1, V)."""

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(word_logits=F.one_hot(tokens[:, :-1], 50).float() * 20)


def test_the_read_step_is_the_one_after_the_whole_prefix() -> None:
    readout = _readout_module()
    stub = SimpleNamespace(
        net=_EchoNet(), device=torch.device("cpu"), on_after_batch_transfer=lambda batch, i: {"image": batch["image"]}
    )
    prefixes = [[7, 8, 9], [11], [21, 22, 23, 24, 25]]  # different lengths: the shorter ones are padded
    logp = readout._next_word_logp(stub, torch.zeros(3, 3, 4, 4, dtype=torch.uint8), prefixes)  # (B, V)
    assert logp.shape == (3, 50)
    # the echo net's output at the read step is the word fed there: the prefix's last word (BOS is step 0)
    assert logp.argmax(1).tolist() == [p[-1] for p in prefixes]
