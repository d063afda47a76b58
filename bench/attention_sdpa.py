#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention (flash backend), causal, on the shapes bench_attention_cuda
measures: B * T = 16384 tokens, hidden 2048 (H = 2048 / D), D = 64 and 128, T = 512 .. 16384.

Writes one line per shape, "D T fwd_ms fwd_bwd_ms", to --out (default: standard output), to be
passed to bench_attention_cuda --sdpa FILE. Times are the best of --repeats runs of one call,
measured with CUDA events after a warm-up, as the C++ bench measures meap. The tensors have meap's
memory layout, (B, T, H, D), handed to SDPA as (B, H, T, D) views (the flash kernels take them
without a copy). fwd_bwd_ms is one forward plus one backward (dO given, no loss).

Usage (on the GPU machine):
  python3 bench/attention_sdpa.py --out sdpa.txt [--dtype bf16|fp16] [--repeats 10]
  build/bench/bench_attention_cuda --sdpa sdpa.txt
"""
import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F


def flash_only():
    """Restricts SDPA to the FlashAttention backend (fails rather than falls back)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def best_ms(fn, repeats):
    fn()  # warm-up
    torch.cuda.synchronize()
    best = float("inf")
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="-", help="output file ('-': standard output)")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--min-t", type=int, default=512)
    parser.add_argument("--max-t", type=int, default=16384)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("attention_sdpa.py: no CUDA device; nothing measured", file=sys.stderr)
        return 1
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    lines = [f"# PyTorch {torch.__version__} SDPA (flash), {torch.cuda.get_device_name()}, {args.dtype}, causal",
             "# D T fwd_ms fwd_bwd_ms"]
    with flash_only():
        for head_dim in (64, 128):
            heads = 2048 // head_dim
            length = args.min_t
            while length <= args.max_t:
                batch = max(1, 16384 // length)

                def make(requires_grad):
                    x = torch.randn(batch, length, heads, head_dim, device="cuda", dtype=dtype)
                    return x.transpose(1, 2).requires_grad_(requires_grad)  # (B, H, T, D) view of (B, T, H, D)

                q, k, v = make(True), make(True), make(True)
                d_out = torch.randn(batch, length, heads, head_dim, device="cuda", dtype=dtype).transpose(1, 2)

                def forward():
                    with torch.no_grad():
                        F.scaled_dot_product_attention(q, k, v, is_causal=True)

                def forward_backward():
                    q.grad = k.grad = v.grad = None
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    out.backward(d_out)

                fwd = best_ms(forward, args.repeats)
                both = best_ms(forward_backward, args.repeats)
                lines.append(f"{head_dim} {length} {fwd:.5f} {both:.5f}")
                print(lines[-1], file=sys.stderr, flush=True)
                del q, k, v, d_out
                torch.cuda.empty_cache()
                length *= 2
    text = "\n".join(lines) + "\n"
    with (contextlib.nullcontext(sys.stdout) if args.out == "-" else open(args.out, "w")) as out:
        out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
