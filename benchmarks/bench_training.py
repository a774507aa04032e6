"""Training speed: ckalab against the hand-written loop, the matmul ceiling, tracking overhead.

The classic "slow feature learning" setup on one MNIST digit pair, with synthetic data of the
same shape (12,665 training and 2,115 test images of 28x28 uint8 pixels, two classes): MLP
784 -> 1024 -> 2, batch 128, MSE on one-hot targets, SGD with lr 0.01 for the features and 0.1
for the readout. Three measurements, each the median of ``--repeats`` runs:

1. Epoch time of ckalab (per-batch CKA on, as the hand loop computes it) against the loop
   researchers write by hand: a ``DataLoader`` over a ``Dataset`` that turns each uint8 image
   into a PIL image and then a float tensor (torchvision's ``MNIST`` + ``ToTensor``; the
   conversion is reimplemented here), and after every step the CKA of the batch's hidden
   features with the batch targets from explicit n x n kernels and a centering matrix.
   Target: ckalab at least 3x faster.
2. ckalab's training step against the float32 matmul ceiling of this machine: ``6 x batch x
   parameters`` FLOPs per step, the ceiling being the best ``torch.mm`` rate measured in this
   run (square 2048 products and the model's own layer shapes). Target: at least 50%.
3. The cost of tracking (loss and accuracy on both splits, CKA of the hidden layer on the full
   train split and the test split) every 4 epochs, and every epoch. Target: at most +25%.

Run: ``python benchmarks/bench_training.py [--repeats 5] [--epochs 8] [--threads N]``.
Wall-clock figures on a shared machine are noisy; compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ckalab.alignment import one_hot
from ckalab.config import RunConfig
from ckalab.data import Split, Task
from ckalab.train import train

N_TRAIN, N_TEST, SIDE, WIDTH, BATCH = 12_665, 2_115, 28, 1024, 128
LR, READOUT_LR = 0.01, 0.1
#: Where both loops train (``--device``); data are loaded on the CPU as in the hand loop.
DEVICE = torch.device("cpu")


def synchronize() -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# ----------------------------------------------------------------------------------------------
# Synthetic MNIST-pair-shaped data
# ----------------------------------------------------------------------------------------------


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, 28, 28) of two noisy class templates, and labels (n,) in {0, 1}."""
    rng = np.random.default_rng(seed)
    templates = rng.random((2, SIDE, SIDE)) ** 3
    labels = rng.integers(0, 2, size=n)
    noise = rng.random((n, SIDE, SIDE))
    images = np.clip(0.6 * templates[labels] + 0.4 * noise, 0, 1)
    return (images * 255).astype(np.uint8), labels.astype(np.int64)


def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(images).reshape(len(images), -1).float().div_(255)
    lab = torch.from_numpy(labels)
    return Split(x, one_hot(lab, 2), lab)


def make_synthetic_task(
    train_data: tuple[np.ndarray, np.ndarray], test_data: tuple[np.ndarray, np.ndarray]
) -> Task:
    train_split, test_split = to_split(*train_data), to_split(*test_data)
    return Task(
        name="synthetic-mnist-pair",
        classes=(0, 1),
        encoding="one_hot",
        input_shape=(SIDE * SIDE,),
        image_shape=(1, SIDE, SIDE),
        train=train_split,
        test=test_split,
        probe_train=train_split,
        probe_test=test_split,
    )


# ----------------------------------------------------------------------------------------------
# The hand-written baseline
# ----------------------------------------------------------------------------------------------


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """What torchvision's ``ToTensor`` does for a mode-"L" image: (1, H, W) float in [0, 1]."""
    arr = np.array(img, np.uint8, copy=True)
    t = torch.from_numpy(arr).view(img.size[1], img.size[0], 1)
    return t.permute(2, 0, 1).contiguous().to(torch.float32).div(255)


class PilMnist(Dataset):
    """torchvision's ``MNIST.__getitem__``: uint8 array -> PIL image -> ``ToTensor``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i].numpy(), mode="L")
        return pil_to_tensor(img), int(self.labels[i])


def naive_cka(features: torch.Tensor, targets: torch.Tensor) -> float:
    """CKA from explicit n x n kernels: ``<HKH, HLH> / (||HKH|| ||HLH||)``."""
    n = features.shape[0]
    k, l_ = features @ features.T, targets @ targets.T
    h = torch.eye(n, device=features.device) - torch.full((n, n), 1.0 / n, device=features.device)
    kc, lc = h @ k @ h, h @ l_ @ h
    return float((kc * lc).sum() / (kc.norm() * lc.norm()))


class HandMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(SIDE * SIDE, WIDTH)
        self.readout = nn.Linear(WIDTH, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.hidden(x))
        return self.readout(h), h


def hand_loop_epochs(images: np.ndarray, labels: np.ndarray, epochs: int) -> float:
    """Seconds per epoch of the hand-written loop (per-step CKA included)."""
    torch.manual_seed(0)
    loader = DataLoader(PilMnist(images, labels), batch_size=BATCH, shuffle=True)
    model = HandMLP().to(DEVICE)
    opt = torch.optim.SGD(
        [
            {"params": model.hidden.parameters(), "lr": LR},
            {"params": model.readout.parameters(), "lr": READOUT_LR},
        ]
    )
    loss_fn = nn.MSELoss()
    ckas: list[float] = []
    synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x = x.view(-1, SIDE * SIDE).to(DEVICE)
            y = one_hot(y, 2).to(DEVICE)
            out, h = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ckas.append(naive_cka(h.detach(), y))
    synchronize()
    return (time.perf_counter() - start) / epochs


# ----------------------------------------------------------------------------------------------
# ckalab
# ----------------------------------------------------------------------------------------------


def ckalab_config(epochs: int, schedule: str, every: int, batch_cka: bool) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"dataset": "mnist", "classes": [0, 1]},
            "model": {"arch": "mlp", "depth": 1, "width": WIDTH, "activation": "relu"},
            "optim": {"optimizer": "sgd", "lr": LR, "readout_lr": READOUT_LR},
            "train": {"loss": "mse", "batch_size": BATCH, "epochs": epochs, "device": str(DEVICE)},
            "tracking": {"schedule": schedule, "every": every, "batch_cka": batch_cka},
        }
    )


def ckalab_run(task: Task, epochs: int, schedule: str, every: int, batch_cka: bool) -> float:
    """Wall seconds of one ckalab run (training loop and tracking; setup excluded)."""
    result = train(ckalab_config(epochs, schedule, every, batch_cka), task=task)
    return result.wall_time


# ----------------------------------------------------------------------------------------------
# Matmul ceiling
# ----------------------------------------------------------------------------------------------


def _best_rate(fn: Callable[[], object], flops: float, reps: int = 10) -> float:
    fn()
    times = []
    for _ in range(reps):
        synchronize()
        t = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t)
    return flops / min(times)


def matmul_ceiling() -> tuple[float, dict[str, float]]:
    """Best float32 ``torch.mm`` FLOP/s over square 2048 and the MLP's own layer shapes."""
    g = torch.Generator().manual_seed(0)
    shapes = {
        "2048x2048x2048": (2048, 2048, 2048),
        "fwd 128x784x1024": (BATCH, SIDE * SIDE, WIDTH),
        "dW 1024x128x784": (WIDTH, BATCH, SIDE * SIDE),
    }
    rates = {}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, generator=g).to(DEVICE)
        b = torch.randn(k, n, generator=g).to(DEVICE)
        rates[name] = _best_rate(lambda a=a, b=b: torch.mm(a, b), 2.0 * m * k * n)
    return max(rates.values()), rates


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def measure_once(task: Task, train_data: tuple[np.ndarray, np.ndarray], args: Any) -> dict:
    """One repeat of every variant, interleaved so that machine drift hits them all alike."""
    e = args.epochs
    return {
        "hand": hand_loop_epochs(*train_data, args.hand_epochs),
        "none": ckalab_run(task, e, "none", 1, False),
        "batch": ckalab_run(task, e, "none", 1, True),
        "every4": ckalab_run(task, e, "epochs", 4, False),
        "every1": ckalab_run(task, e, "epochs", 1, False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per ckalab run (>= 4)")
    parser.add_argument("--hand-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both loops train there)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.epochs = e = max(4, args.epochs)

    train_data = synthetic_images(N_TRAIN, seed=0)
    task = make_synthetic_task(train_data, synthetic_images(N_TEST, seed=1))
    steps_per_epoch = -(-N_TRAIN // BATCH)
    params = SIDE * SIDE * WIDTH + WIDTH + WIDTH * 2 + 2

    print(
        f"torch {torch.__version__}, device {DEVICE}, threads {torch.get_num_threads()}, "
        f"repeats {args.repeats}"
    )
    print(f"data: {N_TRAIN} x {SIDE * SIDE} train, {N_TEST} test; MLP params {params:,}")
    ceiling, rates = matmul_ceiling()
    for name, rate in rates.items():
        print(f"  torch.mm {name}: {rate / 1e9:.1f} GFLOP/s")

    runs = [measure_once(task, train_data, args) for _ in range(args.repeats)]

    def med(fn: Callable[[dict], float]) -> float:
        return statistics.median(fn(r) for r in runs)

    hand, plain, batch = (
        med(lambda r: r["hand"]),
        med(lambda r: r["none"] / e),
        med(lambda r: r["batch"] / e),
    )
    print("\n1. epoch time (medians; ratios are medians of per-repeat ratios)")
    print(f"  hand-written loop (PIL + DataLoader + n x n CKA per step): {hand:.3f} s")
    print(
        f"  ckalab, per-batch CKA on: {batch:.3f} s -> "
        f"{med(lambda r: r['hand'] * e / r['batch']):.1f}x faster (target 3x)"
    )
    print(
        f"  ckalab, no tracking:      {plain:.3f} s -> "
        f"{med(lambda r: r['hand'] * e / r['none']):.1f}x faster"
    )

    step = plain / steps_per_epoch
    achieved = 6.0 * BATCH * params / step
    # The input needs no gradient, so the first layer's backward computes dW only: the
    # multiply-adds really done are 2 (forward) + 2 (dW) + 2 (dX, later layers only) per weight.
    first = SIDE * SIDE * WIDTH + WIDTH
    real = (6.0 * params - 2.0 * first) * BATCH / step
    print("\n2. training step against the matmul ceiling")
    print(f"  step {step * 1e3:.2f} ms = {achieved / 1e9:.1f} GFLOP/s (6 x batch x params)")
    print(f"  ceiling {ceiling / 1e9:.1f} GFLOP/s -> {100 * achieved / ceiling:.0f}% (target 50%)")
    print(
        f"  FLOPs actually needed (no input gradient): {real / 1e9:.1f} GFLOP/s "
        f"= {100 * real / ceiling:.0f}% of the ceiling"
    )

    n4 = len(range(0, e + 1, 4)) + (e % 4 != 0)
    over4 = med(lambda r: r["every4"] / r["none"] - 1)
    over1 = med(lambda r: r["every1"] / r["none"] - 1)
    per_eval = med(lambda r: (r["every1"] - r["none"]) / (e + 1) / (r["none"] / e))
    print(f"\n3. tracking overhead ({e} epochs; the evaluations include step 0)")
    print(f"  no tracking {med(lambda r: r['none']):.2f} s")
    print(f"  every 4 epochs ({n4} evaluations): +{100 * over4:.0f}% (target +25%)")
    print(f"  every epoch ({e + 1} evaluations):   +{100 * over1:.0f}%")
    print(
        f"  one evaluation = {per_eval:.2f} epochs of training; steady state every 4 epochs: "
        f"+{100 * per_eval / 4:.0f}%"
    )


if __name__ == "__main__":
    main()
