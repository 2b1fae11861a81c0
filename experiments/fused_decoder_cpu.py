"""Issue 14, plan item 1 measured on the CPU: the teacher-forced captioner loop with the word half of the LSTM
input projection precomputed for all steps, one stacked GEMM for h ([W_hid; W_gate; W_hh]) and the LSTM gates
written out in Python, against the current loop (nn.LSTMCell). Same outputs (max |Δ| printed), forward +
backward time of each, interleaved, median of 6.
    OMP_NUM_THREADS=1 python experiments/fused_decoder_cpu.py
"""

import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from jointcap.models.captioner import AttentionCaptioner

torch.manual_seed(0)
D, V, B, T, HW = 256, 60, 32, 31, 10
cap = AttentionCaptioner(D, V)


def fused_forward(self, emb, tokens):
    (feats, feats_proj), (h, c) = self.prepare(emb)
    E, H = self.embed.embedding_dim, self.lstm.hidden_size
    A = self.attention.hid.out_features
    w_ih = self.lstm.weight_ih
    xg = torch.nn.functional.linear(
        self.embed(tokens[:, :-1]), w_ih[:, :E], self.lstm.bias_ih + self.lstm.bias_hh
    )  # (B,T,4H)
    w_h = torch.cat([self.attention.hid.weight, self.gate.weight, self.lstm.weight_hh], 0)
    b_h = torch.cat([self.attention.hid.bias, self.gate.bias, torch.zeros_like(self.lstm.bias_hh)])
    w_c = w_ih[:, E:]
    Dd = self.gate.out_features
    hs, alphas = [], []
    for t in range(xg.shape[1]):
        a, g, hh = torch.nn.functional.linear(h, w_h, b_h).split([A, Dd, 4 * H], 1)
        e = self.attention.score(torch.tanh(feats_proj + a[:, None, :])).squeeze(-1)
        alpha = e.softmax(-1)
        ctx = torch.bmm(alpha[:, None, :], feats).squeeze(1) * torch.sigmoid(g)
        gates = xg[:, t] + hh + torch.nn.functional.linear(ctx, w_c)
        i, f, gg, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        alphas.append(alpha)
    return self.out(self.dropout(torch.stack(hs, 1))), torch.stack(alphas, 1)


cap.eval()
emb = torch.randn(B, D, HW, HW)
tok = torch.randint(4, V, (B, T + 1))
with torch.no_grad():
    a1, b1 = cap(emb, tok)
    a2, b2 = fused_forward(cap, emb, tok)
print("max diff", (a1 - a2).abs().max().item(), (b1 - b2).abs().max().item())
cap.train()


def run(f, bf16):
    e = emb.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        lo, al = f(e, tok)
        loss = lo.float().logsumexp(-1).mean() + al.float().pow(2).mean()
    loss.backward()


for bf16 in (False, True):
    ts: dict[str, list[float]] = {"ref": [], "fused": []}
    for _rep in range(6):
        for name, f in (("ref", lambda e, t: cap(e, t)), ("fused", lambda e, t: fused_forward(cap, e, t))):
            t0 = time.perf_counter()
            run(f, bf16)
            ts[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in ts.items()}
    print(
        "bf16" if bf16 else "fp32", {k: f"{v:.1f} ms" for k, v in med.items()}, f"ratio {med['ref'] / med['fused']:.2f}"
    )
