"""Speed and accuracy of ckalab.alignment against pytorch-cka, torch-cka and the hardware ceiling.

Run:  python benchmarks/bench_alignment.py [--repeats 5] [--skip-torch-cka]

The peers are optional and must not replace torch: install them with
``pip install --no-deps pytorch-cka torch-cka tqdm``. Missing peers are reported and skipped.

(a) The 5 x 5 layer matrix (debiased / unbiased HSIC, what pytorch-cka computes) between two
    784-1024-1024-2 MLPs on n = 2,048 inputs: time and max abs error against a float64 reference,
    for ckalab, pytorch-cka, torch-cka, and the ceiling of the ten plain ``x @ x.T`` products.
(b) Layer-vs-target linear CKA for n = 12,665, p = 1,024 and one-hot targets, against one
    float32 ``xc.T @ xc`` of the same shape; and the extra peak memory at n = 60,000.

Every time is the median of ``--repeats`` runs; ratios are computed within this run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch

from ckalab import alignment as A


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mlp_layers(seed: int, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of Linear, ReLU, Linear, ReLU, Linear of a 784-1024-1024-2 MLP (no grad)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 2),
    )
    outs = []
    h = x
    with torch.no_grad():
        for module in net:
            h = module(h)
            outs.append(h.clone())
    return outs


def reference_unbiased_cka_matrix(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]):
    """Naive float64 reference: explicit Gram matrices, zeroed diagonals, Song et al. formula."""

    def unbiased(k: torch.Tensor, ell: torch.Tensor) -> float:
        n = k.shape[0]
        kt, lt = k.clone(), ell.clone()
        kt.fill_diagonal_(0)
        lt.fill_diagonal_(0)
        one = torch.ones(n, dtype=torch.float64)
        value = (
            (kt * lt).sum()
            + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * ((kt @ one) @ (lt @ one))
        )
        return float(value) / (n * (n - 3))

    kx = [t.double() @ t.double().T for t in xs]
    ky = [t.double() @ t.double().T for t in ys]
    hx = [unbiased(k, k) for k in kx]
    hy = [unbiased(k, k) for k in ky]
    out = torch.empty(len(xs), len(ys), dtype=torch.float64)
    for i, a in enumerate(kx):
        for j, b in enumerate(ky):
            out[i, j] = unbiased(a, b) / (hx[i] * hy[j]) ** 0.5
    return out


def torch_cka_compare(module, xs, ys) -> torch.Tensor:
    """torch-cka's CKA.compare loop on pre-extracted features (its _HSIC, one batch)."""
    this = SimpleNamespace(device="cpu")
    hsic = module.CKA._HSIC
    out = torch.zeros(len(xs), len(ys), 3)
    for i, feat1 in enumerate(xs):
        k = feat1 @ feat1.t()
        k.fill_diagonal_(0.0)
        out[i, :, 0] += hsic(this, k, k)
        for j, feat2 in enumerate(ys):
            ell = feat2 @ feat2.t()
            ell.fill_diagonal_(0)
            out[i, j, 1] += hsic(this, k, ell)
            out[i, j, 2] += hsic(this, ell, ell)
    return out[:, :, 1] / (out[:, :, 0].sqrt() * out[:, :, 2].sqrt())


def bench_layer_matrix(repeats: int, skip_torch_cka: bool) -> None:
    print("\n(a) 5 x 5 layer matrix, two 784-1024-1024-2 MLPs, n = 2,048, unbiased HSIC")
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(2048, 784, generator=g)
    xs, ys = mlp_layers(1, inputs), mlp_layers(2, inputs)
    ref = reference_unbiased_cka_matrix(xs, ys)

    def ceiling():
        for t in [*xs, *ys]:
            t @ t.T

    t_ceiling = median_time(ceiling, repeats)
    t_ours = median_time(lambda: A.cka_matrix(xs, ys, debiased=True), repeats)
    err_ours = float((A.cka_matrix(xs, ys, debiased=True) - ref).abs().max())
    print(f"  ceiling (ten float32 x @ x.T)     {t_ceiling * 1e3:8.1f} ms")
    print(
        f"  ckalab cka_matrix                 {t_ours * 1e3:8.1f} ms   max abs err {err_ours:.1e}"
    )
    print(f"  ckalab / ceiling                  {t_ours / t_ceiling:8.2f}x")
    try:
        import cka as pytorch_cka  # pytorch-cka installs the top-level package `cka`
    except ImportError:
        print("  pytorch-cka: not installed (pip install --no-deps pytorch-cka)")
    else:
        t_peer = median_time(lambda: pytorch_cka.cka_from_features(xs, ys), repeats)
        err_peer = float((pytorch_cka.cka_from_features(xs, ys).double() - ref).abs().max())
        print(f"  pytorch-cka cka_from_features     {t_peer * 1e3:8.1f} ms", end="")
        print(f"   max abs err {err_peer:.1e}")
        print(f"  pytorch-cka / ceiling             {t_peer / t_ceiling:8.2f}x")
        print(f"  speed-up of ckalab over pytorch-cka: {t_peer / t_ours:.2f}x  (target >= 1.5x)")
    if skip_torch_cka:
        return
    try:
        import torch_cka
    except ImportError:
        print("  torch-cka: not installed (pip install --no-deps torch-cka tqdm)")
    else:
        t_tc = median_time(lambda: torch_cka_compare(torch_cka, xs, ys), max(1, repeats // 3), 0)
        err_tc = float((torch_cka_compare(torch_cka, xs, ys).double() - ref).abs().max())
        print(
            f"  torch-cka CKA.compare loop        {t_tc * 1e3:8.1f} ms   max abs err {err_tc:.1e}"
        )
        print(f"  speed-up of ckalab over torch-cka: {t_tc / t_ours:.1f}x")


def bench_layer_vs_target(repeats: int) -> None:
    print("\n(b) layer vs one-hot target, n = 12,665, p = 1,024 (one MNIST digit pair)")
    g = torch.Generator().manual_seed(0)
    n, p = 12_665, 1024
    x = torch.relu(torch.randn(n, p, generator=g)) + 0.1 * torch.randn(n, 1, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    y = A.one_hot(labels, 2)
    xc = x - x.mean(0)
    t_ceiling = median_time(lambda: xc.T @ xc, repeats)
    t_biased = median_time(lambda: A.cka(x, y), repeats)
    t_debiased = median_time(lambda: A.cka(x, y, debiased=True), repeats)
    ref = float(A.cka(x.double(), y.double()))
    err = abs(float(A.cka(x, y)) - ref)
    print(f"  one float32 xc.T @ xc             {t_ceiling * 1e3:8.1f} ms")
    print(f"  ckalab cka (biased)               {t_biased * 1e3:8.1f} ms   abs err {err:.1e}")
    print(f"  ckalab cka (debiased)             {t_debiased * 1e3:8.1f} ms")
    print(f"  biased / matmul                   {t_biased / t_ceiling:8.2f}x  (target <= 2x)")
    print(f"  debiased / matmul                 {t_debiased / t_ceiling:8.2f}x")


_MEMORY_CHILD = """
import torch
from ckalab import alignment as A

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

torch.manual_seed(0)
n, p = 60_000, 1024
x = torch.randn(n, p).relu_()  # in place: no temporary
y = A.one_hot(torch.randint(0, 2, (n,)), 2)
A.cka(x[:100], y[:100])  # warm up lazily allocated buffers
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS:")
A.cka(x, y)
A.cka(x, y, debiased=True)
print((status("VmHWM:") - before) / 1024)
"""


def bench_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=True
    )
    extra = float(out.stdout.strip())
    input_mb = 60_000 * 1024 * 4 / 2**20
    print(
        f"  n = 60,000, p = 1,024: extra peak memory {extra:.0f} MiB "
        f"(input itself {input_mb:.0f} MiB; target < 1,024 MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-torch-cka", action="store_true", help="skip the slow peer")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    bench_layer_matrix(args.repeats, args.skip_torch_cka)
    bench_layer_vs_target(args.repeats)
    bench_memory()


if __name__ == "__main__":
    main()
