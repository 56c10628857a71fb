"""Makes the GGUF tokenizer fixtures read by tests/test_tokenizer_gguf.c.

Run: HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_gguf_tokenizer_fixture.py [SmolLM2.gguf [pairs.jsonl.gz]]
  (defaults: ~/.cache/autoneg/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf and
   ../shared/data/real-pairs/civitai-sfw/train.jsonl.gz)

The expected ids come from Hugging Face transformers loading the GGUF itself
(AutoTokenizer.from_pretrained(dir, gguf_file=name)), encode(text, add_special_tokens=False).

Files in tests/ref/gguf_tok/:
  tiny_bpe.gguf   a byte-level (tokenizer.ggml.model gpt2, pre smollm) vocabulary: the 256 byte
                  tokens, a few merges, CONTROL <|endoftext|> <|im_start|> <|im_end|>, USER_DEFINED <think>
  tiny_spm.gguf   a SentencePiece one (model llama): <unk> <s> </s>, <0x00>..<0xFF>, pieces with scores,
                  no merges (they come from the scores)
  tiny.ids.gz     expected ids for both files: lines "FILE<TAB>hex(text)<TAB>id id ..."
  smollm2.ids.gz  (only when the model is present) expected ids for the SmolLM2 file, one line per text:
                    "c<TAB>LINE<TAB>FIELD<TAB>FNV1A64<TAB>id id ..." for a civitai text: its 1-based
                        line in the pairs file, p (prompt) or n (negative_prompt), the FNV-1a 64-bit
                        hash (hex) of its UTF-8 -- the text itself is never stored (no licence to copy it)
                    "t<TAB>hex(text)<TAB>id id ..." for the hand-written tricky texts
                    "chat<TAB>hex(system)<TAB>hex(prompt)<TAB>hex(text)": the text transformers'
                        apply_chat_template(add_generation_prompt=True) writes with the GGUF's template
"""
import gzip
import json
import os
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGUFWriter, TokenType
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "gguf_tok")
os.makedirs(OUT, exist_ok=True)


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_gguf(path, kv_writer):
    w = GGUFWriter(path, "llama")
    kv_writer(w)
    # transformers reads a config from the file too: the few llama keys it needs
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_bpe(path):
    b2u = bytes_to_unicode()
    toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [b2u[b] for b in range(256)]
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("Ġa", "n"), ("Ġan", "d"),
              ("l", "o"), ("lo", "w"), ("Ġ", "b"), ("a", "d"), ("Ġb", "ad"), ("Ã", "©")]
    merged = []
    for a, b in merges:
        if a + b not in toks and a + b not in merged:
            merged.append(a + b)
    toks += merged + ["<think>"]
    types = [TokenType.CONTROL] * 3 + [TokenType.NORMAL] * (len(toks) - 4) + [TokenType.USER_DEFINED]

    def kv(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges([f"{a} {b}" for a, b in merges])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(False)
        w.add_chat_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                            "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")

    write_gguf(path, kv)


def tiny_spm(path):
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", "t", "h", "e", "a", "n", "d", "▁t", "he", "▁the", "▁a", "an", "▁an", "▁and", "o", "w", "l",
              "lo", "low", "▁low", "b", "▁b", "i", "r", "s", "▁bad", "ad", "é"]
    toks += pieces + ["<think>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256 + \
        [TokenType.NORMAL] * len(pieces) + [TokenType.USER_DEFINED]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0]

    def kv(w):
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)

    write_gguf(path, kv)


def hf(path):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    if GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "smollm":
        # transformers' GGUF loader has no split for "smollm" and falls back to plain GPT-2; SmolLM2's
        # own tokenizer.json (and llama.cpp's "smollm") first isolates every number character:
        # Digits(individual_digits) then ByteLevel. That is what the model was trained on, so that is
        # the reference; the texts where plain transformers differs are counted and printed.
        plain = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.plain = plain
    return tok


DIFFER = []


def ids(tok, text):
    out = tok.encode(text, add_special_tokens=False)
    if hasattr(tok, "plain") and tok.plain.encode(text, add_special_tokens=False) != out:
        DIFFER.append(text)
    return out


TRICKY = [
    "", " ", "  ", "hello world", " the and low bad", "the\n\nand  low   bad\t\tx", "café crème brûlée",
    "12345 67.89 1,000,000 x2 3d 4k 8K UHD", "①②③ ½ ² Ⅻ ٣ १२", "日本語のテキスト、漢字。", "emoji 😀👍🏽 🇫🇷",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>x<|endoftext|>",
    "a<|im_end|>b <|im_start|> c", "<think>why</think>", "(masterpiece:1.2), ((best quality)), [bad hands]",
    "don't I'll we're you've she'd it's THEY'RE", "tab\tnew\nline\r\nwin", "  leading and trailing  ",
    "ünïcödé ÀÉÎÕÜ ß ẞ", "Ω≈ç√∫˜µ≤≥÷", "mixed123abc456", "a\u00a0b\u2003c\u3000d", "\u200bzero\u200dwidth",
    "EasyNegative, bad-hands-5, ng_deepnegative_v1_75t", "lowres, bad anatomy, text, error, jpeg artifacts",
]


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
        "~/.cache/autoneg/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    pairs = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        HERE, "..", "..", "..", "shared", "data", "real-pairs", "civitai-sfw", "train.jsonl.gz")

    tiny = [("tiny_bpe.gguf", tiny_bpe), ("tiny_spm.gguf", tiny_spm)]
    lines = []
    for name, make in tiny:
        path = os.path.join(OUT, name)
        make(path)
        tok = hf(path)
        for text in TRICKY + ["the and low", "<s>bad</s> and", " bad", "bad", "é\u00e9x"]:
            lines.append(f"{name}\t{text.encode().hex()}\t{' '.join(map(str, ids(tok, text)))}")
    with gzip.open(os.path.join(OUT, "tiny.ids.gz"), "wt", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    print("tiny:", len(lines), "texts;", len(DIFFER), "where transformers' plain GGUF tokenizer differs")
    DIFFER.clear()

    if not os.path.exists(model) or not os.path.exists(pairs):
        print("no SmolLM2 file or no pairs file: smollm2.ids.gz not written")
        return
    tok = hf(model)
    with gzip.open(pairs, "rt", encoding="utf-8") as f:
        rows = f.read().split("\n")
    out = []
    # 240 lines spread over the file, prompt and negative of each: 480 texts
    step = max(1, len(rows) // 240)
    for i in range(240):
        ln = 1 + i * step
        row = json.loads(rows[ln - 1])
        for field, key in (("p", "prompt"), ("n", "negative_prompt")):
            text = row.get(key) or ""
            h = fnv1a64(text.encode())
            out.append(f"c\t{ln}\t{field}\t{h:016x}\t{' '.join(map(str, ids(tok, text)))}")
    for text in TRICKY:
        out.append(f"t\t{text.encode().hex()}\t{' '.join(map(str, ids(tok, text)))}")
    # the GGUF's chat template run by transformers (a system text given: SmolLM2's template puts in
    # its own default system turn otherwise, which autoneg's templates leave to the caller)
    for system, prompt in (("S", "a cat, (masterpiece:1.2)"), ("You write negative prompts.", "portrait\nphoto")):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(f"chat\t{system.encode().hex()}\t{prompt.encode().hex()}\t{text.encode().hex()}")
    with gzip.open(os.path.join(OUT, "smollm2.ids.gz"), "wt", compresslevel=9) as f:
        f.write("\n".join(out) + "\n")
    print("smollm2:", len(out), "texts;", len(DIFFER), "where transformers' plain GGUF tokenizer differs:")
    for text in DIFFER:
        print("   ", repr(text[:60]) if not text or text in TRICKY else "(a civitai text)")


if __name__ == "__main__":
    main()
