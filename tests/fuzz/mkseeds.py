#!/usr/bin/env python3
"""Writes the fuzz seed corpora (tests/fuzz/corpus/{gguf,plan,api}); the files
are committed, this is how they were made:  python3 tests/fuzz/mkseeds.py

gguf: small but complete GGUF v3 files (every KV type, arrays, nested arrays,
      dense and MoE layouts, fused and split experts, quantized types), each a
      few KiB with its tensor data (zeros).
plan: the same files behind fuzz_plan's parameter bytes, and a few compact
      descriptions (see fuzz_plan.c).
api:  valid (and some typical invalid) request bodies for every route."""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
# ggml types: (id, block size, bytes per block)
T = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34), "q4_k": (12, 256, 144),
     "q6_k": (14, 256, 210), "i8": (24, 1, 1), "bf16": (30, 1, 2)}


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
           I64: "<q", F64: "<d"}
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for it in items:
            out += val(et, it)
        return out
    return struct.pack(fmt[t], v)


def gguf(kvs, tensors, align=32):
    """kvs: [(key, type, value)], tensors: [(name, type, [ne...])]"""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        head += s(k) + struct.pack("<I", t) + val(t, v)
    off = 0
    sizes = []
    for name, ty, ne in tensors:
        tid, blk, bsz = T[ty]
        n = 1
        for e in ne:
            n *= e
        size = n // blk * bsz
        head += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", e) for e in ne)
        head += struct.pack("<IQ", tid, off)
        sizes.append(size)
        off += (size + align - 1) // align * align
    pad = (-len(head)) % align
    return head + b"\0" * pad + b"\0" * off


def hparams(arch, layers, embd, ff, heads, kv, experts=0, used=0, vocab=None):
    kvs = [("general.architecture", STR, arch), ("general.name", STR, "fuzz seed"),
           ("general.file_type", U32, 7), (arch + ".block_count", U32, layers),
           (arch + ".embedding_length", U32, embd), (arch + ".feed_forward_length", U32, ff),
           (arch + ".attention.head_count", U32, heads), (arch + ".attention.head_count_kv", U32, kv),
           (arch + ".context_length", U32, 256)]
    if experts:
        kvs += [(arch + ".expert_count", U32, experts), (arch + ".expert_used_count", U32, used)]
    if vocab:
        kvs += [("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.tokens", ARR, (STR, vocab)),
                ("tokenizer.ggml.scores", ARR, (F32, [0.0] * len(vocab))),
                ("tokenizer.ggml.token_type", ARR, (I32, [1] * len(vocab)))]
    return kvs


def dense(layers=2, embd=32, ff=64, ty="q8_0"):
    vocab = ["<unk>", "<s>", "</s>", "a", "b", "c"]
    t = [("token_embd.weight", "f32", [embd, len(vocab)]), ("output_norm.weight", "f32", [embd]),
         ("output.weight", ty, [embd, len(vocab)])]
    for l in range(layers):
        t += [(f"blk.{l}.attn_norm.weight", "f32", [embd]), (f"blk.{l}.attn_q.weight", ty, [embd, embd]),
              (f"blk.{l}.attn_k.weight", ty, [embd, embd // 2]), (f"blk.{l}.attn_v.weight", ty, [embd, embd // 2]),
              (f"blk.{l}.attn_output.weight", ty, [embd, embd]), (f"blk.{l}.ffn_norm.weight", "f32", [embd]),
              (f"blk.{l}.ffn_gate.weight", ty, [embd, ff]), (f"blk.{l}.ffn_up.weight", ty, [embd, ff]),
              (f"blk.{l}.ffn_down.weight", ty, [ff, embd])]
    return gguf(hparams("llama", layers, embd, ff, 4, 2, vocab=vocab), t)


def moe(layers=2, embd=32, ff=32, experts=4, used=2, fused_gate_up=False):
    t = [("token_embd.weight", "f16", [embd, 8]), ("output_norm.weight", "f32", [embd]),
         ("output.weight", "q8_0", [embd, 8])]
    for l in range(layers):
        t += [(f"blk.{l}.attn_norm.weight", "f32", [embd]), (f"blk.{l}.attn_qkv.weight", "q8_0", [embd, 3 * embd]),
              (f"blk.{l}.attn_output.weight", "q8_0", [embd, embd]), (f"blk.{l}.ffn_norm.weight", "f32", [embd]),
              (f"blk.{l}.ffn_gate_inp.weight", "f32", [embd, experts])]
        if fused_gate_up:
            t += [(f"blk.{l}.ffn_gate_up_exps.weight", "q8_0", [embd, 2 * ff, experts])]
        else:
            t += [(f"blk.{l}.ffn_gate_exps.weight", "q8_0", [embd, ff, experts]),
                  (f"blk.{l}.ffn_up_exps.weight", "q8_0", [embd, ff, experts])]
        t += [(f"blk.{l}.ffn_down_exps.weight", "q8_0", [ff, embd, experts]),
              (f"blk.{l}.ffn_up_exps.bias", "f32", [ff, experts])]
    return gguf(hparams("qwen3moe", layers, embd, ff, 4, 4, experts, used), t)


def split_experts():
    t = [("token_embd.weight", "f32", [16, 4])]
    for l in range(2):
        t += [(f"blk.{l}.ffn_gate_inp.weight", "f32", [16, 2])]
        for e in range(2):
            t += [(f"blk.{l}.ffn_up.{e}.weight", "f16", [16, 16]), (f"blk.{l}.ffn_down.{e}.weight", "f16", [16, 16])]
    return gguf(hparams("mixtral", 2, 16, 16, 2, 2, 2, 1), t)


def kv_zoo():
    """every scalar type, nested arrays, alignment, a vocab-only file"""
    kvs = [("general.architecture", STR, "llama"), ("general.alignment", U32, 64), ("k.u8", U8, 1), ("k.i8", I8, -1),
           ("k.u16", U16, 2), ("k.i16", I16, -2), ("k.f32", F32, 0.5), ("k.bool", BOOL, True), ("k.u64", U64, 3),
           ("k.i64", I64, -3), ("k.f64", F64, 0.25), ("k.arr", ARR, (ARR, [(U8, [1, 2]), (U8, [3])])),
           ("llama.block_count", U32, 1), ("llama.feed_forward_length", ARR, (I32, [64, 96]))]
    return gguf(kvs, [("blk.0.ffn_up.weight", "q4_k", [256, 2]), ("blk.0.ffn_down.weight", "q6_k", [256, 1]),
                      ("blk.0.attn_q.weight", "bf16", [8, 8])], align=64)


def main():
    ggufs = {"dense_q8": dense(), "dense_q4": dense(layers=3, embd=64, ff=64, ty="q4_0"), "moe": moe(),
             "moe_fused": moe(layers=1, fused_gate_up=True), "split_experts": split_experts(), "kv_zoo": kv_zoo(),
             "vocab_only": gguf(hparams("llama", 0, 0, 0, 0, 0, vocab=["<unk>", "x"]), [])}
    d = os.path.join(ROOT, "corpus", "gguf")
    os.makedirs(d, exist_ok=True)
    for name, b in ggufs.items():
        assert len(b) < 64 * 1024, (name, len(b))
        open(os.path.join(d, name + ".bin"), "wb").write(b)

    # plan: form byte, budget selector, budget, ctx selector, ctx, batch, lookahead, mode, gbps x2, grow
    d = os.path.join(ROOT, "corpus", "plan")
    os.makedirs(d, exist_ok=True)

    def params(form, bsel, budget, ctx=256, batch=64, la=0xFF, mode=0, grow=300):
        return struct.pack("<BBQBHHBBHHH", form, bsel, budget, 0, ctx, batch, la, mode, 300, 2000, grow)

    for name in ("dense_q8", "moe_fused", "split_experts", "kv_zoo"):
        b = ggufs[name]
        for i, (bsel, budget) in enumerate([(2, 0x6000), (0, 1 << 30)]):
            open(os.path.join(d, f"{name}_{i}.bin"), "wb").write(params(0, bsel, budget) + b)

    def desc(n_layer, hp, tensors):
        out = struct.pack("<H", n_layer)
        for v in hp:  # selector 1: a 16-bit value
            out += struct.pack("<BH", 1, v)
        out += struct.pack("<BB", len(tensors) & 255, len(tensors) >> 8)
        for what, layer, mant, shift, ne in tensors:
            out += struct.pack("<BHHB", what, layer, mant, shift)
            if not what & 0x80:
                out += struct.pack("<B", ne)
        return out

    # layer names index k_layer in fuzz_plan.c: 1 attn_q, 7 ffn_gate, 8 ffn_up, 9 ffn_down, 10 ffn_gate_inp, 11..13 exps
    dense_t = [(0x80, 0, 1000, 10, 0), (0x82, 0, 1000, 10, 0)]
    for l in range(8):
        dense_t += [(1, l, 500, 12, 0), (7, l, 1000, 12, 0), (8, l, 1000, 12, 0), (9, l, 1000, 12, 0)]
    moe_t = [(0x80, 0, 1000, 10, 0)]
    for l in range(4):
        moe_t += [(1, l, 500, 12, 0), (10, l, 64, 4, 0), (11, l, 1000, 14, 8), (12, l, 1000, 14, 8), (13, l, 1000, 14, 8)]
    hp_dense = [512, 1536, 8, 2, 0, 0, 32000, 2048]
    hp_moe = [512, 1536, 8, 2, 8, 2, 32000, 2048]
    for i, (bsel, budget, mode) in enumerate([(2, 0x3000, 0), (2, 0x6000, 0), (2, 0xA000, 0), (2, 0x6000, 2)]):
        open(os.path.join(d, f"desc_dense_{i}.bin"), "wb").write(
            params(1, bsel, budget, mode=mode) + desc(8, hp_dense, dense_t))
        open(os.path.join(d, f"desc_moe_{i}.bin"), "wb").write(
            params(1, bsel, budget, mode=mode) + desc(4, hp_moe, moe_t))

    d = os.path.join(ROOT, "corpus", "api")
    os.makedirs(d, exist_ok=True)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    bodies = {
        "show": {"model": "tiny"}, "show_name": {"name": "tiny:latest"},
        "generate": {"model": "tiny", "prompt": "Why is the sky blue?", "system": "Be brief.", "stream": False,
                     "raw": False, "images": [], "options": {"temperature": 0, "top_k": 40, "top_p": 0.9,
                                                              "seed": 42, "num_predict": 32, "num_ctx": 2048,
                                                              "stop": ["\n\n", "User:"]}},
        "generate_load": {"model": "tiny"},
        "chat": {"model": "tiny", "messages": msgs + [{"role": "assistant", "content": "Hello"},
                                                      {"role": "tool", "content": "{}"}],
                 "stream": True, "options": {"temperature": 0.7, "stop": "END"}},
        "oai_chat": {"model": "tiny", "messages": [{"role": "developer", "content": "x"},
                                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                                   {"role": "assistant", "content": None}],
                     "temperature": 1.5, "top_p": 0.5, "max_tokens": 16, "seed": 7, "stop": ["a", "b"], "n": 1,
                     "stream": True, "stream_options": {"include_usage": True}},
        "oai_completion": {"model": "tiny:latest", "prompt": ["Once upon"], "max_completion_tokens": 8,
                           "top_k": 5, "stream": False},
        "embed": {"model": "tiny", "input": "hello"},
        "bad_model": {"model": "other"}, "bad_type": {"model": "tiny", "prompt": 5, "messages": "x"},
        "bad_role": {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]},
        "image": {"model": "tiny", "messages": [{"role": "user", "content": "x", "images": ["AAAA"]}]},
    }
    for name, b in bodies.items():
        open(os.path.join(d, name + ".json"), "w").write(json.dumps(b))
    open(os.path.join(d, "not_object.json"), "w").write("[1,2]")
    open(os.path.join(d, "broken.json"), "w").write('{"model": "tiny", "prompt": "\\ud800')
    return 0


if __name__ == "__main__":
    sys.exit(main())
