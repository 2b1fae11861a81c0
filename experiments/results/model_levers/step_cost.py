"""CPU cost of one training step (1 thread, batch 32, 80 px, captions of 24 tokens) per model lever and precision.

    OMP_NUM_THREADS=1 python experiments/results/model_levers/step_cost.py

Process CPU seconds per step (3 steps after building; the first includes warm-up). Issue 25's levers: the
encoder cut at layer1 (stride 4), the captioner-only skip, coverage; and bf16 autocast against fp32.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from jointcap.models.joint import JointModel

SETTINGS: dict[str, dict] = {
    "stage 2, stride 8 (before)": {"encoder": {"stage": 2, "output_stride": 8}},
    "stage 1, stride 4": {"encoder": {"stage": 1, "output_stride": 4}},
    "stage 2, stride 8, skip 64 (stem), coverage": {
        "encoder": {"stage": 2, "output_stride": 8},
        "embedding": {"skip_dim": 64},
        "captioner": {"coverage": True},
    },
    "stage 1, stride 4, skip 64 (stem), coverage": {
        "encoder": {"stage": 1, "output_stride": 4},
        "embedding": {"skip_dim": 64},
        "captioner": {"coverage": True},
    },
}


def step_seconds(task: str, options: dict, bf16: bool, steps: int = 3) -> list[float]:
    torch.manual_seed(0)
    m = JointModel(100, 1000, task=task, **options).train().to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, 80, 80).contiguous(memory_format=torch.channels_last)
    y, tok = torch.randint(0, 100, (32,)), torch.randint(4, 1000, (32, 24))
    opt = torch.optim.AdamW(m.parameters())
    out_s = []
    for _ in range(steps):
        t = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m(x, tok if task == "joint" else None)
        loss = F.cross_entropy(out.class_logits.float(), y)
        if out.word_logits is not None:
            loss = loss + F.cross_entropy(out.word_logits.float().flatten(0, 1), tok[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        out_s.append(time.process_time() - t)
    return out_s


def main() -> None:
    torch.set_num_threads(1)
    print(
        "classifier, stage 2 stride 8: bf16",
        [f"{s:.2f}" for s in step_seconds("classifier", SETTINGS["stage 2, stride 8 (before)"], True)],
    )
    for name, options in SETTINGS.items():
        for task in ("classifier", "joint"):
            print(f"{task}, {name}, fp32:", [f"{s:.2f}" for s in step_seconds(task, options, False)])


if __name__ == "__main__":
    main()
