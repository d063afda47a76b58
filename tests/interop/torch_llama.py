"""PyTorch half of the interop test: an independent LLaMA forward (Hugging Face semantics:
rotate_half RoPE, repeat_kv GQA, RMSNorm, SwiGLU) reads the directory meap wrote, checks its
logits against meap's, then writes a changed model back for meap to check.

usage: torch_llama.py FROM_MEAP_DIR TO_MEAP_DIR   (needs torch; safetensors parsed with the stdlib)
"""
import json
import struct
import sys
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = bytearray(data[base + begin:base + end])
        tensors[name] = torch.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"]).clone()
    return tensors


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous().to(torch.float32)
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def llama_logits(cfg, w, tokens):
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // heads
    B, T = tokens.shape
    eps = cfg["rms_norm_eps"]

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos().float(), emb.sin().float()
    x = w["model.embed_tokens.weight"][tokens]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, heads, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, kv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, kv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5 + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"], cfg["architectures"]
    w = read_safetensors(src / "model.safetensors")
    tokens_flat = torch.frombuffer(bytearray((src / "tokens.i32").read_bytes()), dtype=torch.int32).long()
    B = 2
    tokens = tokens_flat.view(B, -1)
    ours = torch.frombuffer(bytearray((src / "logits.f32").read_bytes()), dtype=torch.float32).view(-1, cfg["vocab_size"])
    theirs = llama_logits(cfg, w, tokens).reshape(-1, cfg["vocab_size"])
    err = (ours - theirs).abs().max().item() / max(1.0, theirs.abs().max().item())
    print(f"torch_llama: meap -> torch: max relative |difference| = {err:.3g}")
    if err > 1e-4:
        return 1
    # And back: change the weights in PyTorch, write them, and record torch's logits for meap.
    gen = torch.Generator().manual_seed(0)
    changed = {k: v + 0.02 * torch.randn(v.shape, generator=gen) for k, v in w.items()}
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg))
    write_safetensors(dst / "model.safetensors", changed)
    (dst / "tokens.i32").write_bytes(tokens_flat.to(torch.int32).numpy().tobytes())
    (dst / "logits.f32").write_bytes(llama_logits(cfg, changed, tokens).reshape(-1).contiguous().numpy().tobytes())
    print(f"torch_llama: wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
