"""Epoch time of in-memory batching: torch DataLoader vs. ckalab's BatchStream.

MNIST-shaped data (12,665 x 784 float32: the size of the MNIST 0/1 training pair), one-hot
targets, batch size 128, shuffled every epoch. Prints the median epoch time of each and the
ratio. Run: ``python benchmarks/bench_data.py [--epochs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from ckalab.alignment import one_hot
from ckalab.data import BatchStream, Split

N, D, K, BATCH = 12_665, 784, 2, 128


def _epoch_time(iterable) -> float:
    start = time.perf_counter()
    total = 0.0
    for xb, _yb in iterable:
        total += float(xb[0, 0])  # touch the batch so nothing is skipped
    return time.perf_counter() - start


def _median_epoch(iterable, epochs: int) -> float:
    _epoch_time(iterable)  # warm-up
    return statistics.median(_epoch_time(iterable) for _ in range(epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=7)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, D, generator=g)
    labels = torch.randint(0, K, (N,), generator=g)
    y = one_hot(labels, K)

    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    stream = BatchStream(Split(x, y, labels), BATCH, generator=torch.Generator().manual_seed(1))

    t_loader = _median_epoch(loader, args.epochs)
    t_stream = _median_epoch(stream, args.epochs)
    print(f"torch threads: {torch.get_num_threads()}  (torch {torch.__version__})")
    print(f"data: {N} x {D} float32, batch {BATCH}, {len(stream)} batches/epoch")
    print(f"DataLoader(TensorDataset) median epoch: {t_loader * 1e3:8.2f} ms")
    print(f"BatchStream               median epoch: {t_stream * 1e3:8.2f} ms")
    print(f"ratio DataLoader / BatchStream:         {t_loader / t_stream:8.1f}x")


if __name__ == "__main__":
    main()
