"""Time and peak memory of the empirical NTK methods, and whether the automatic choice is right.

Run:  python benchmarks/bench_ntk.py [--repeats 3] [--cases mlp256,mlp512,resnet128]

Cases (float32, CPU, the default memory budget of 1 GiB):

- ``mlp256``, ``mlp512``: the classic MLP 784 -> 1024 -> 2 (P = 805,890) at n = 256 and 512;
- ``resnet128``: the small ResNet (ResNet-8, width 16, 3 x 32 x 32 inputs, 10 outputs,
  P = 78,042) at n = 128;

each for the trace kernel (n x n) and the full kernel (n O x n O), per layer. Methods: Jacobian
contraction (``jacobian``), NTK-vector products (``vp``) and the explicit per-example loop
(``loop``: one ``autograd.grad`` per example and output, the whole Jacobian in memory), each in
a fresh process (peak memory = the rise of VmHWM over the resident set before the call; the
ResNet's loop runs on 32 examples, its time scaled by 4: the backward passes dominate). The
automatic choice costs :func:`ckalab.ntk.plan_ntk` plus the chosen method; it must be within 10%
of the faster of the two methods. A method the cost model predicts to be more than 20 times
slower than the other is timed on n / 8 examples and extrapolated (``n^2``), marked ``~``.

Every time is the median of ``--repeats`` runs; ratios are computed within this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

_CHILD = """
import gc, json, statistics, sys, time
import torch
from ckalab.models import MLP, ResNet
from ckalab.ntk import empirical_ntk, plan_ntk

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

case, kind, method = sys.argv[1:4]
n, repeats = int(sys.argv[4]), int(sys.argv[5])
g = torch.Generator().manual_seed(0)
if case.startswith("mlp"):
    model, x = MLP(784, 2, width=1024, generator=g), torch.rand(n, 784, generator=g)
else:
    model, x = ResNet((3, 32, 32), 10, generator=g), torch.randn(n, 3, 32, 32, generator=g)
warm = "auto" if method == "plan" else method
empirical_ntk(model, x[:2], kind=kind, method=warm)  # warm up torch.func and the allocator
gc.collect()
times, plans = [], []
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS:")
for _ in range(repeats):
    if method == "plan":
        start = time.perf_counter()
        plan = plan_ntk(model, x, kind=kind)
        times.append(time.perf_counter() - start)
        plans.append(plan)
        continue
    start = time.perf_counter()
    ntk = empirical_ntk(model, x, kind=kind, method=method)
    times.append(time.perf_counter() - start)
    del ntk
    gc.collect()
out = {"time": statistics.median(times), "peak_mib": (status("VmHWM:") - before) / 1024}
if plans:
    p = plans[0]
    out.update(method=p.method, cost_jacobian=p.cost_jacobian, cost_vp=p.cost_vp,
               block=p.block_jacobian, resident=p.resident)
print(json.dumps(out))
"""

#: name -> (title, n, examples for the loop baseline: fewer for the ResNet, whose 1,280
#: single-example backward passes take minutes; its time is scaled linearly, marked ``~``).
CASES = {
    "mlp256": ("MLP 784-1024-2, n = 256", 256, 256),
    "mlp512": ("MLP 784-1024-2, n = 512", 512, 512),
    "resnet128": ("ResNet-8 w16 (10 outputs), n = 128", 128, 32),
}


def child(case: str, kind: str, method: str, n: int, repeats: int) -> dict:
    cmd = [sys.executable, "-c", _CHILD, case, kind, method, str(n), str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{case} {kind} {method} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_case(case: str, kind: str, repeats: int) -> bool:
    title, n, loop_n = CASES[case]
    plan = child(case, kind, "plan", n, 1)
    est = {"jacobian": plan["cost_jacobian"], "vp": plan["cost_vp"]}
    print(f"\n{title}, {kind} kernel")
    print(
        f"  plan: {plan['method']} (estimates jacobian {est['jacobian']:.3g}, vp {est['vp']:.3g} "
        f"flop-eq; contraction block {plan['block']}"
        f"{', resident' if plan['resident'] else ''}), {plan['time'] * 1e3:.0f} ms"
    )
    res: dict[str, dict] = {}
    marks: dict[str, str] = {}
    for method in ("jacobian", "vp", "loop"):
        other = "vp" if method == "jacobian" else "jacobian"
        if method == "loop" and loop_n < n:
            r = child(case, kind, method, loop_n, 1)
            r["time"] *= n / loop_n
            marks[method] = f"~ (n = {loop_n}, time x{n / loop_n:.0f}, memory not scaled)"
        elif method != "loop" and est[method] > 20 * est[other]:
            small = max(2, n // 8)
            r = child(case, kind, method, small, 1)
            r["time"] *= (n / small) ** 2
            marks[method] = f"~ (n = {small}, x{(n / small) ** 2:.0f})"
            r["peak_mib"] = float("nan")
        else:
            r = child(case, kind, method, n, repeats)
        res[method] = r
    base = res["loop"]
    for method, r in res.items():
        print(
            f"  {method:<9} {r['time']:9.2f} s  {r['time'] / base['time']:6.2f}x loop   "
            f"peak {r['peak_mib']:7.0f} MiB  {r['peak_mib'] / base['peak_mib']:5.2f}x loop"
            f"  {marks.get(method, '')}"
        )
    fast = min(res["jacobian"]["time"], res["vp"]["time"])
    auto = res[plan["method"]]["time"] + plan["time"]
    ok = auto <= 1.10 * fast
    faster = "jacobian" if res["jacobian"]["time"] <= res["vp"]["time"] else "vp"
    print(
        f"  auto      {auto:9.2f} s  = plan + {plan['method']}; faster method: {faster}; "
        f"auto / faster = {auto / fast:.3f}  -> {'within' if ok else 'NOT within'} 10%"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--kinds", default="trace,full")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    ok = [
        bench_case(case, kind, args.repeats)
        for case in args.cases.split(",")
        for kind in args.kinds.split(",")
    ]
    print(f"\nautomatic choice within 10% of the faster method: {sum(ok)} / {len(ok)} cases")


if __name__ == "__main__":
    main()
