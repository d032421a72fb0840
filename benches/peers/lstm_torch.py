"""PyTorch peer of kiln-nlp's `lstm` benchmark: a one-layer LSTM language model (vocabulary
65, embedding 64, hidden 256), one training step (forward, cross-entropy, backward, Adam) at
batch 32 and sequence length 64, 2 threads. Prints one JSON line in the format of kiln-core's
BenchResult.

Run by `cargo xtask bench` when `python3 -c "import torch"` works; KILN_BENCH_SECS sets the
time budget (default 3 s).
"""
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LstmLm(nn.Module):
    def __init__(self, vocab=65, embed=64, hidden=256):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.output = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.embedding(x))
        return self.output(h)


def main():
    torch.set_num_threads(int(os.environ.get("KILN_PEER_THREADS", "2")))
    torch.manual_seed(0)
    batch, seq, vocab = 32, 64, 65
    model = LstmLm()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()

    step()
    budget = float(os.environ.get("KILN_BENCH_SECS", "3"))
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "name": "lstm_train_step_h256_b32_t64",
        "backend": f"pytorch {torch.__version__} ({torch.get_num_threads()} threads)",
        "iterations": len(times),
        "median_secs": median,
        "throughput": batch * seq / median,
        "unit": "tokens",
        "tiny": False,
        "extra": {},
    }))


if __name__ == "__main__":
    main()
