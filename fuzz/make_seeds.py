#!/usr/bin/env python3
"""Writes the committed seed corpora of fuzz/corpus/<target>/ (run from anywhere; idempotent).

  gguf_header_fuzzer  small GGUF files laid out like fuzz's reader expects them: synthetic ones covering
                      every value type, both versions, alignment and tensor types; and the real headers
                      of llama.cpp's vocab files (third_party/llama.cpp/models, when present) with every
                      array cut to a few elements, so the real key sets stay but the files are small
  wire_codec_fuzzer   a selector byte (see wire_codec_fuzzer.cpp) + request bodies of docs/protocol.md
                      and the daemon's replies the client decodes
  openai_codec_fuzzer a selector byte (c chat, t completion, e embeddings) + OpenAI request bodies as
                      the tools send them (docs/openai.md)
  text_format_fuzzer  assembled contexts (docs/context-assembly.md's example and others), and round-trip
                      inputs: a byte 0x00..0x07 (context + 1), then old \\0 new \\0 path \\0 pre \\0 mid \\0 post
  snapshot_file_fuzzer a selector byte (0: as is, 1: checksums made right first) + snapshot files laid out as
                      docs/snapshot.md says (checksums by libxxhash, through ctypes): a workspace's, a bare
                      session's, an empty one
"""
import ctypes
import ctypes.util
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "corpus")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
              U64: "<Q", I64: "<q", F64: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, xs = v
        return struct.pack("<IQ", et, len(xs)) + b"".join(gvalue(et, x) for x in xs)
    return struct.pack(SCALAR_FMT[t], v)


# ggml type id -> (block size, bytes per block) for the few types the seeds use.
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 30: (1, 2)}


def gguf(kvs, tensors=(), version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml type)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gvalue(t, v)
    offset = 0
    infos = b""
    for name, dims, typ in tensors:
        n = 1
        for d in dims:
            n *= d
        bs, ts = GGML[typ]
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", typ, offset)
        offset += (n // bs * ts + alignment - 1) // alignment * alignment
    out += infos
    if tensors:
        out += b"\0" * (-len(out) % alignment)
        out += bytes((i * 37) & 0xFF for i in range(offset))
    return out


def read_gguf_header(data):
    """Parses a real GGUF header (kv list, tensor infos) just enough to rewrite it smaller."""
    pos = 0

    def take(n):
        nonlocal pos
        b = data[pos:pos + n]
        if len(b) != n:
            raise ValueError("truncated")
        pos += n
        return b

    def u(fmt):
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def rstr():
        return take(u("<Q"))

    def rval(t):
        if t == STR:
            return rstr()
        if t == ARR:
            et, n = u("<I"), u("<Q")
            return (et, [rval(et) for _ in range(n)])
        return u(SCALAR_FMT[t])

    if take(4) != b"GGUF":
        raise ValueError("not gguf")
    version, n_t, n_kv = u("<I"), u("<Q"), u("<Q")
    kvs = []
    for _ in range(n_kv):
        k = rstr()
        t = u("<I")
        kvs.append((k, t, rval(t)))
    return version, n_t, kvs


def gguf_seeds():
    seeds = {}
    llama_kvs = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "tiny-test"),
        ("general.alignment", U32, 64),
        ("general.file_type", U32, 7),
        ("llama.context_length", U32, 2048),
        ("llama.embedding_length", U64, 64),
        ("llama.block_count", I32, 2),
        ("llama.attention.head_count", U16, 4),
        ("llama.attention.head_count_kv", U8, 2),
        ("llama.rope.freq_base", F32, 10000.5),
        ("modeld.test.f64", F64, -0.25),
        ("modeld.test.i8", I8, -3),
        ("modeld.test.i16", I16, -300),
        ("modeld.test.i64", I64, -7000000000),
        ("modeld.test.flag", BOOL, 1),
        ("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "a", "b", "ab", "\u00e9"])),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, -1.0, -1.5, -2.0, -3.0])),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 1, 1, 1, 1])),
        ("modeld.test.bools", ARR, (BOOL, [1, 0, 1])),
        ("tokenizer.chat_template", STR, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"),
    ]
    tensors = [("token_embd.weight", [32, 8], 1), ("blk.0.attn_q.weight", [64, 2], 8),
               ("output_norm.weight", [32], 0), ("blk.0.cube", [2, 3, 4], 0), ("blk.0.q4", [32], 2)]
    seeds["llama_v3_tensors.gguf"] = gguf(llama_kvs, tensors, alignment=64)
    seeds["llama_v2_no_tensors.gguf"] = gguf(llama_kvs[:5] + llama_kvs[6:], version=2)
    qwen = [
        ("general.architecture", STR, "qwen2"),
        ("qwen2.context_length", U32, 32768),
        ("qwen2.embedding_length", U32, 64),
        ("qwen2.block_count", U32, 1),
        ("qwen2.attention.head_count", U32, 2),
        ("qwen2.attention.head_count_kv", U32, 1),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.tokens", ARR, (STR, ["!", "\"", "#", "\u0120the"])),
        ("tokenizer.ggml.merges", ARR, (STR, ["\u0120 t", "h e"])),
    ]
    seeds["qwen2_q8.gguf"] = gguf(qwen, [("token_embd.weight", [64, 4], 8), ("output.weight", [64, 4], 30)])
    bert = [
        ("general.architecture", STR, "bert"),
        ("bert.pooling_type", U32, 2),
        ("bert.vocab_size", U32, 4),
        ("bert.embedding_length", U32, 32),
    ]
    seeds["bert_pooling.gguf"] = gguf(bert, [("token_embd.weight", [32, 4], 0)])
    seeds["empty.gguf"] = gguf([])
    seeds["magic_only.gguf"] = b"GGUF"
    seeds["not_gguf.xml"] = b'<?xml version="1.0"?>\n<net name="model" version="11"/>\n'

    models = os.path.join(ROOT, "third_party", "llama.cpp", "models")
    if os.path.isdir(models):
        for name in sorted(os.listdir(models)):
            if not name.endswith(".gguf"):
                continue
            try:
                with open(os.path.join(models, name), "rb") as f:
                    data = f.read(64 << 20)
                version, _, kvs = read_gguf_header(data)
            except (ValueError, struct.error, OSError):
                continue
            small = []
            for k, t, v in kvs:
                if t == ARR:
                    v = (v[0], v[1][:4])
                elif t == STR and len(v) > 256:
                    v = v[:256]
                small.append((k, t, v))
            seeds["vocab_" + name] = gguf(small, version=version)
    return seeds


def wire_seeds():
    bodies = {
        "o": [{"model": "tiny"}, {"workspace": "ws1", "model": "tiny", "config": {"n_ctx": 4096}},
              {"text": "int main", "parse_special": False}, {"model": "tiny-embed", "input": "int main"},
              {"path": "src/a.cc", "content": "int a;\n"}, {"from": "a", "to": "b"},
              {"role": "user", "text": "hi"}, {"keep_turns": 20}, {"question": "Any bugs?", "max_tokens": 64},
              {"system": "You are a coding assistant.", "tools": "[]", "repo_map": "src/\n"}],
        "s": [{"id": "system", "kind": "system", "content": "You are a coding assistant.\n"},
              {"id": "user", "kind": "user", "content": "<|im_start|>", "parse_special": True},
              {"id": "f", "kind": "file", "content": "x", "digest": "0" * 64, "n_tokens": 3}],
        "S": [[{"id": "system", "kind": "system", "content": "You are a coding assistant.\n"},
               {"id": "file:main.c", "kind": "file", "content": "int main() { return 0; }\n"}], []],
        "c": [{"n_ctx": 4096, "n_batch": 512, "n_ubatch": 512, "threads": 0, "kv_type": "f16",
               "flash_attn": False, "seed": 0, "reuse": True}, {"n_ctx": -1, "seed": 18446744073709551615}],
        "d": [{"max_tokens": 128, "temperature": 0, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
               "repeat_penalty": 1.1, "repeat_last_n": 64, "seed": 7, "stop": ["\n\n", "</s>"]},
              {"max_tokens": 16}, {"temperature": 1e300, "top_k": 2147483648}],
        "m": [{"model": "tiny", "path": "/m/tiny.gguf", "backend": "gguf", "format_version": 3,
               "architecture": "qwen2", "name": "", "context_length": 4096, "embedding_length": 64,
               "block_count": 2, "head_count": 2, "head_count_kv": 1, "vocab_size": 151936, "file_type": 7,
               "file_type_name": "Q8_0", "pooling": "", "has_chat_template": True, "tensor_count": 10,
               "parameter_count": 1000, "file_size": 16000000, "data_offset": 9000000,
               "digest": "sha256:" + "ab" * 32}],
        "p": [{"manifest_digest": "5f1e", "tokens_reused": 0, "tokens_prefilled": 7, "tokens_resident": 7,
               "first_diff_segment": 0, "segment_tokens": [7, 3.5, -1], "reuse_fallback": False,
               "prefill_ms": 12.5}],
        "u": [{"tokens_reused": 0, "tokens_prefilled": 6, "tokens_resident": 13, "reuse_fallback": False,
               "prefill_ms": 3.1}],
        "r": [{"finish_reason": "length", "tokens_generated": 2, "text": "int x", "first_token_ms": 10.0,
               "decode_ms": 20.0, "tokens_per_second": 100.0}, {"finish_reason": "bogus"}],
        "R": [{"backend": "gguf", "workspace": "ws1", "model_digest": "sha256:00", "manifest_digest": "5f",
               "n_ctx": 4096, "tokens_resident": 40, "prefix_tokens": 40, "suffix_tokens": 0,
               "generated_tokens": 0, "total_reused": 0, "total_prefilled": 40, "total_generated": 0,
               "reuse_fallbacks": 0, "kv_bytes": 1048576, "partial_trim": True, "fatal": False,
               "segments": [{"id": "system", "kind": "system", "start": 0, "n_tokens": 40},
                            {"id": "x", "kind": "nope", "start": 2.5}],
               "model": "tiny", "busy": False, "last_used_ms_ago": 5}],
        "e": [{"code": "context_overflow", "message": "context overflow at prefill_suffix: ...",
               "stage": "prefill_suffix", "resident": 4000, "additional": 200, "n_ctx": 4096},
              {"code": "unsupported_feature", "message": "no", "feature": "fork"},
              {"code": "manifest_mismatch", "message": "m", "reason": "digest"}, {"code": 3}],
    }
    seeds = {}
    for sel, items in bodies.items():
        for i, body in enumerate(items):
            seeds[f"{sel}{i}.json"] = (sel + json.dumps(body, ensure_ascii=False)).encode()
    seeds["o_invalid.json"] = b'o{"a":'
    seeds["o_utf8.json"] = 'o{"text":"caf\u00e9 \\ud83d\\ude00 \\u0000"}'.encode()
    return seeds


def text_seeds():
    example = (
        "<|im_start|>system\nYou are a coding assistant.\n"
        '<file path="src/main.cc" lines="3">\nint add(int a, int b) {\n  return a + b;\n}\n</file>\n'
        "<|im_end|>\n<|im_start|>user\nWhat does add do?<|im_end|>\n"
        "<|im_start|>assistant\nIt returns the sum.<|im_end|>\n<|im_start|>user\n"
        '<change path="src/main.cc" kind="edit">\n@@ -1,3 +1,3 @@\n int add(int a, int b) {\n'
        "-  return a + b;\n+  return a + b + 0;\n }\n</change>\n<|im_end|>\n"
    )
    kinds = (
        '<file path="a" lines="2">\nx\ny\n\\ No newline at end of file\n</file>\n'
        '<file path="e" lines="0">\n</file>\n'
        '<change path="a" kind="full" lines="1">\n</file>\n</change>\n'
        '<change path="n/b.txt" kind="add" lines="1">\nx\n\\ No newline at end of file\n</change>\n'
        '<change path="e" kind="remove"/>\n'
        '<change path="a" kind="rename" to="c/d"/>\n'
        "\\<file escaped free text\n"
        '<change path="c/d" kind="edit">\n@@ -0,0 +1 @@\n+top\n@@ -1 +2,2 @@\n-</file>\n+</file>\n+z\n'
        "\\ No newline at end of file\n</change>\n"
    )
    seeds = {"example.txt": example.encode(), "kinds.txt": kinds.encode()}
    pairs = [
        ("", "a\n"), ("a", "a\n"), ("a\nb\n", "a\nc"), ("a\r\nb\r\n", "a\r\nB\r\n"),
        ("1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\nthree\n4\n5\n6\n7\neight\n9\n"),
        ("caf\u00e9\n\u20ac\n", "caf\u00e9\n\u20ac!\n"),
        ("</file>\n<file path=\"x\" lines=\"3\">\n@@ -1 +1 @@\n", "\\ No newline at end of file\n</change>\n"),
    ]
    with open(os.path.join(ROOT, "src", "core", "manifest.cpp"), encoding="utf-8") as f:
        src = f.read()[:3000]
    edited = src.replace("return", "return /*x*/", 2)
    pairs.append((src, edited))
    for i, (a, b) in enumerate(pairs):
        ctx = bytes([1 + (i % 4)])
        free = ["system text\n<file not a block\n", "user: hi\n", "<change trailing"] if i % 2 else ["", "", ""]
        fields = [a, b, "src/f%d.cc" % i] + free
        seeds["roundtrip%d.bin" % i] = ctx + b"\0".join(x.encode() for x in fields)
    return seeds


def openai_seeds():
    tool = {"type": "function", "function": {"name": "get_weather", "description": "weather",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}
    chats = [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 16,
         "temperature": 0.2, "top_p": 0.9, "seed": 1, "stop": ["\n\n"], "user": "u", "prompt_cache_key": "k",
         "messages": [{"role": "system", "content": "You are a coding agent."},
                      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                             "arguments": "{\"city\":\"Paris\"}"}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "21C"}],
         "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": False},
        {"messages": [{"role": "user", "content": "x"}], "tools": [tool],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "object"}}}, "max_completion_tokens": 5},
        {"messages": [{"role": "user", "content": "x"}], "n": 2, "logprobs": True, "logit_bias": {"1": 2}},
        {"messages": [{"role": "developer", "content": "x"}], "reasoning_effort": "none",
         "chat_template_kwargs": {"enable_thinking": False}, "presence_penalty": -2, "frequency_penalty": 2},
    ]
    completions = [{"model": "m", "prompt": "def f(", "max_tokens": 8, "stream": True},
                   {"prompt": ["one"], "suffix": "x"}, {"prompt": 5}]
    embeddings = [{"model": "e", "input": "int main"}, {"input": ["a", "b"], "encoding_format": "base64"},
                  {"input": [], "dimensions": 3}]
    seeds = {}
    for sel, bodies in (("c", chats), ("t", completions), ("e", embeddings)):
        for i, b in enumerate(bodies):
            seeds[f"{sel}{i}.json"] = sel.encode() + json.dumps(b).encode()
    return seeds


def snapshot_file(meta, tokens, state):
    """A snapshot file (docs/snapshot.md): fixed header, JSON meta, i32 tokens, state, XXH3-64 trailer."""
    lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    m = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    head = b"MODELDSN" + struct.pack("<IIQQQ", 1, 0, len(m), len(tokens), len(state))
    out = head + struct.pack("<Q", lib.XXH3_64bits(head + m, len(head) + len(m))) + m
    out += b"".join(struct.pack("<i", t) for t in tokens) + state
    return out + struct.pack("<Q", lib.XXH3_64bits(out, len(out)))


def snapshot_seeds():
    identity = {"backend": "gguf", "backend_build": "llama.cpp de3ff815", "model_digest": "ab" * 32,
                "model_fingerprint": "xxh3:0123456789abcdef", "architecture": "qwen2", "n_layer": 2, "n_embd": 64,
                "n_head_kv": 1, "n_vocab": 100, "kv_type": "f16", "flash_attn": False, "n_ctx": 256}
    config = {"n_ctx": 256, "n_batch": 64, "n_ubatch": 64, "threads": 2, "kv_type": "f16", "flash_attn": False,
              "seed": 18446744073709551615, "reuse": True}

    def seg(i, kind, start, n):
        return {"id": i, "digest": "%064x" % start, "kind": kind, "start": start, "n_tokens": n}

    workspace = {"mode": "edit_aware", "prefilled": True, "asked": True, "system": "You are a coding assistant.",
                 "tools": "", "repo_map": "src/\n",
                 "base": [{"path": "src/a.cc", "content": "int a;\n"}],
                 "files": [{"path": "src/a.cc", "content": "int a = 1;\n"},
                           {"path": "caf\u00e9.md", "content": "\u20ac\n"}],
                 "log": [{"kind": "turn", "role": "user", "text": "hi"},
                         {"kind": "turn", "role": "assistant", "text": "hello", "sent": "hello!"},
                         {"kind": "note", "role": "", "text": "<change path=\"src/a.cc\" kind=\"edit\">"}],
                 "compactions": 1, "compactions_in_place": 0, "generation": 1, "rewrites": 2,
                 "prefilled_log_size": 2, "prefilled_rewrites": 2, "context_tokens": 20, "log_tokens": 8,
                 "note_tokens": 3}
    full = {"workspace": "proj:main", "model": "tiny", "saved_unix_ms": 1732982400000, "config": config,
            "identity": identity, "prefix_digest": "cd" * 32,
            "prefix_segments": [seg("system", "system", 0, 6), seg("file:src/a.cc", "file", 6, 4)],
            "suffix_segments": [seg("user", "user", 10, 3)],
            "totals": {"reused": 5, "prefilled": 13, "generated": 2}, "workspace_state": workspace}
    bare = dict(full, workspace="bare", prefix_digest="", prefix_segments=[], suffix_segments=[],
                workspace_state=None)
    seeds = {}
    for name, meta, tokens, state in (("full", full, list(range(1, 16)), bytes(range(64)) * 4),
                                      ("bare", bare, [7, 8, 9], b"\0state"), ("empty", bare, [], b"")):
        f = snapshot_file(meta, tokens, state)
        seeds[name + ".snap"] = b"\0" + f
        seeds[name + "_resealed.snap"] = b"\1" + f
    return seeds


def write(target, seeds):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    total = sum(len(v) for v in seeds.values())
    print(f"{target}: {len(seeds)} seeds, {total} bytes", file=sys.stderr)


def main():
    write("gguf_header_fuzzer", gguf_seeds())
    write("wire_codec_fuzzer", wire_seeds())
    write("text_format_fuzzer", text_seeds())
    write("openai_codec_fuzzer", openai_seeds())
    write("snapshot_file_fuzzer", snapshot_seeds())


if __name__ == "__main__":
    main()
