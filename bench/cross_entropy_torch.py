#!/usr/bin/env python3
"""PyTorch figure for bench_cross_entropy_cuda: LM head + cross-entropy with full logits.

The same shapes and input distributions as bench/cross_entropy_cuda.cu (bfloat16 hidden states
and head weight, labels selected with probability `fraction`, the rest -100), through the path a
PyTorch training loop takes: logits = hidden @ weight.T for every row, F.cross_entropy (mean over
the selected rows, ignore_index = -100), backward into hidden and weight. Two variants: bf16 logits
straight into F.cross_entropy, and logits upcast to float first (what Hugging Face LLaMA did until
transformers 4.44). Times are the best of `--repeats` runs (CUDA events, forward + backward, and
forward only); memory is torch.cuda.max_memory_allocated() during one run minus what was allocated
before it (inputs and parameter gradients exist beforehand), comparable to the C++ bench's
"extra MiB". Needs a CUDA build of PyTorch (the GPU machine).

    python3 bench/cross_entropy_torch.py [--tokens 16384] [--d 2048] [--vocab 32000] [--fraction 0.3]
        [--meap-ms 12.3 --meap-mib 300]   # optional: the fused figures, to print the ratios
With MEAP_BENCH_FIGURES=<file> set, each figure is also appended to that file as a JSON line.
"""
import argparse
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--meap-ms", type=float, default=None, help="fused fwd+bwd time from bench_cross_entropy_cuda")
    parser.add_argument("--meap-mib", type=float, default=None, help="fused extra MiB from bench_cross_entropy_cuda")
    args = parser.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("cross_entropy_torch.py: PyTorch is not installed; nothing measured")
        return 0
    if not torch.cuda.is_available():
        print("cross_entropy_torch.py: no CUDA device visible to PyTorch; nothing measured")
        return 0

    device = torch.device("cuda")
    n, d, v = args.tokens, args.d, args.vocab
    generator = torch.Generator(device=device).manual_seed(1)
    hidden = ((torch.rand(n, d, device=device, generator=generator) * 2 - 1)).to(torch.bfloat16).requires_grad_()
    weight = ((torch.rand(v, d, device=device, generator=generator) * 2 - 1) * 0.05).to(torch.bfloat16).requires_grad_()
    keep = torch.rand(n, device=device, generator=generator) < args.fraction
    labels = torch.randint(0, v, (n,), device=device, generator=generator)
    labels = torch.where(keep, labels, torch.full_like(labels, -100))
    selected = int(keep.sum())
    # Parameter gradients exist before the measured runs, as in a training loop after step 1.
    hidden.grad = torch.zeros_like(hidden)
    weight.grad = torch.zeros_like(weight)

    def run(upcast: bool, backward: bool) -> float:
        logits = hidden @ weight.T
        if upcast:
            logits = logits.float()
        loss = F.cross_entropy(logits, labels, ignore_index=-100)
        if backward:
            loss.backward()
        return float(loss.detach())

    def best_ms(upcast: bool, backward: bool) -> float:
        run(upcast, backward)  # warm-up
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(args.repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if backward:
                run(upcast, True)
            else:
                with torch.no_grad():
                    run(upcast, False)
            stop.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(stop))
        return best

    def extra_mib(upcast: bool) -> float:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(upcast, True)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; N = {n} tokens, d = {d}, "
          f"V = {v}, {selected} selected ({100 * selected / n:.0f}%), bfloat16")
    flops = 3 * 2 * n * v * d
    print(f"{'path':<40} {'ms':>10} {'TFLOP/s':>10} {'extra MiB':>12} {'fwd ms':>10}")
    results = {}
    for upcast in (False, True):
        name = "torch full logits" + (" .float()" if upcast else " bf16") + " + F.cross_entropy"
        ms = best_ms(upcast, True)
        fwd = best_ms(upcast, False)
        mem = extra_mib(upcast)
        results[upcast] = (ms, mem)
        print(f"{name:<40} {ms:>10.3f} {flops / (ms * 1e-3) * 1e-12:>10.1f} {mem:>12.1f} {fwd:>10.3f}")
        if os.environ.get("MEAP_BENCH_FIGURES"):  # one JSON line per figure, as the C++ benches write
            with open(os.environ["MEAP_BENCH_FIGURES"], "a", encoding="utf-8") as figures:
                figures.write(json.dumps({"bench": "cross_entropy_torch", "path": name, "tokens": n, "d": d, "V": v,
                                          "selected": selected, "torch": torch.__version__, "fwd_bwd_ms": ms,
                                          "fwd_ms": fwd, "extra_mib": mem}) + "\n")
    if args.meap_ms is not None:
        for upcast, (ms, mem) in results.items():
            ratio_mem = f", memory {mem / args.meap_mib:.2f}x" if args.meap_mib else ""
            print(f"ratio torch{' .float()' if upcast else ' bf16'} / meap fused: time {ms / args.meap_ms:.2f}x{ratio_mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
