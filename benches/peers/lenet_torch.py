"""PyTorch peer of kiln-vision's `lenet` benchmark: LeNet-5 (ReLU, max pooling, first
convolution padded by 2), one training step (forward, cross-entropy, backward, Adam) at batch
64 on 28x28 images, 2 threads. Prints one JSON line in the format of kiln-core's BenchResult.

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


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def main():
    torch.set_num_threads(int(os.environ.get("KILN_PEER_THREADS", "2")))
    torch.manual_seed(0)
    batch = 64
    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
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
        "name": "lenet5_train_step_b64",
        "backend": f"pytorch {torch.__version__} ({torch.get_num_threads()} threads)",
        "iterations": len(times),
        "median_secs": median,
        "throughput": batch / median,
        "unit": "images",
        "tiny": False,
        "extra": {},
    }))


if __name__ == "__main__":
    main()
