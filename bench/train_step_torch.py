#!/usr/bin/env python3
"""bench/train_step_torch.py: the PyTorch baseline of bench_train_step_cuda.

The same model and step as meap's bench, written the way a PyTorch user would: a Hugging Face-style
LLaMA (RMSNorm, rotate_half RoPE, grouped-query attention through scaled_dot_product_attention,
SwiGLU, untied head), float32 parameters under bfloat16 autocast (float16 with a GradScaler for
--dtype fp16; no autocast for fp32), full logits and F.cross_entropy on them, MEAP masking of 15% of
the inputs, gradient accumulation over micro-batches, clip_grad_norm_(1.0) and fused AdamW. Timed
eagerly and, when it compiles, under torch.compile. Writes a JSON file that bench_train_step_cuda
reads with --torch FILE:

    python3 bench/train_step_torch.py --out torch.json [--rows 16 --micro-batches 2 --seq 4096]
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d // heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        try:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except TypeError:  # PyTorch before 2.5: repeat the kv heads
            group = self.heads // self.kv_heads
            out = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1),
                                                 is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_proj = nn.Linear(d, ffn, bias=False)
        self.up_proj = nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn):
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = Attention(d, heads, kv_heads)
        self.post_attention_layernorm = RMSNorm(d)
        self.mlp = MLP(d, ffn)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, vocab, d, layers, heads, kv_heads, ffn, seq, theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        head_dim = d // heads
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(seq).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos()[None, None], persistent=False)
        self.register_buffer("sin", angles.sin()[None, None], persistent=False)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = self.cos[:, :, :t].to(self.embed_tokens.weight.dtype), self.sin[:, :, :t].to(self.embed_tokens.weight.dtype)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def meap_inputs(tokens, mask_id, ratio, generator):
    """MEAP: replace max(1, floor(ratio * (T - 1))) inputs per row by mask_id, never the last one."""
    inputs, labels = tokens[:, :-1].clone(), tokens[:, 1:]
    rows, t = inputs.shape
    k = max(1, int(ratio * (t - 1)))
    scores = torch.rand(rows, t - 1, device=tokens.device, generator=generator)
    positions = scores.topk(k, dim=1).indices
    inputs.scatter_(1, positions, mask_id)
    return inputs, labels


def measure(model, args, compiled_name):
    device = torch.device("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                  fused=True)
    scaler = torch.cuda.amp.GradScaler(enabled=args.dtype == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    generator = torch.Generator(device=device)
    generator.manual_seed(1)
    vocab = args.vocab
    micro = args.rows // args.micro_batches
    times, loss_value = [], float("nan")
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, vocab - 1, (args.rows, args.seq + 1), device=device, generator=generator)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for m in range(args.micro_batches):
            inputs, labels = meap_inputs(tokens[m * micro:(m + 1) * micro], vocab - 1, 0.15, generator)
            with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float().view(-1, vocab), labels.reshape(-1)) / args.micro_batches
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item() * args.micro_batches  # the step's one read-back
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]
    print(f"  PyTorch {compiled_name}: median step {seconds:.3f} s, {args.rows * args.seq / seconds:.0f} tokens/s, "
          f"last loss {loss_value:.4f}")
    return args.rows * args.seq / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--micro-batches", type=int, default=2)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    args.vocab = 32064
    if args.rows % args.micro_batches:
        parser.error("--rows must be a multiple of --micro-batches")
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": args.rows,
              "micro_batches": args.micro_batches, "seq": args.seq, "dtype": args.dtype}
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # meap's fp32 GEMMs are full float32
    model = Llama(args.vocab, 768, args.layers, 12, 2, 2048, args.seq).cuda()
    result["eager_tokens_per_second"] = measure(model, args, "eager")

    def write():
        # Written after each measurement, so that a run stopped during torch.compile keeps eager's.
        with open(args.out + ".tmp", "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)
        os.replace(args.out + ".tmp", args.out)

    write()
    if args.no_compile:
        result["compile_tokens_per_second"] = None
        result["compile_error"] = "--no-compile"
    else:
        try:
            result["compile_tokens_per_second"] = measure(torch.compile(model), args, "torch.compile")
        except Exception as error:  # noqa: BLE001 -- any failure of the compiler is reported, not fatal
            result["compile_tokens_per_second"] = None
            result["compile_error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(f"  PyTorch torch.compile: failed ({result['compile_error']})")
    write()


if __name__ == "__main__":
    main()
