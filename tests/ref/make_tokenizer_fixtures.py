"""Reference token ids for tests/test_tokenizer*.c.

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_tokenizer_fixtures.py [--shared ../shared]

Texts (tests/ref/tokenizers/texts.jsonl, one JSON object per line):
  {"text": ..., "src": ...}        hand-written edge cases and MIT/CC0 style templates (committed)
  {"civitai": N, "field": F}       line N (0-based) of real-pairs/civitai-sfw/train.jsonl.gz, field F:
                                   that data has no licence, so only its position is committed and the
                                   C test reads the text from ../shared.
For each reference tokenizer, tests/ref/tokenizers/ids_NAME.txt.gz has one line per text: the ids,
space separated, encoded without BOS/EOS. References:
  gpt2         HF tokenizers: BPE(encoder.json, vocab.bpe) + ByteLevel pre-tokenizer
  llama2       sentencepiece on llama2/tokenizer.model
  internlm2    sentencepiece on internlm2/tokenizer_internlm2.model
  internlm2chat  internlm2 with the chat tokens of tests/ref/tokenizers/internlm2-chat/tokenizer_config.json:
               the text split at those tokens (longest first), each piece encoded by sentencepiece
               (what transformers' slow tokenizers do; InternLM2 has no dummy prefix)
  tinystories  HF tokenizers on TinyStories-656K/tokenizer.json (add_special_tokens=False)
  llama2c32k   llama2.c's encode() re-implemented in Python on llama2c-tokenizer-32k/tokenizer.bin
  stories260k  the same on stories260K/tok512.bin
  trained      HF tokenizers on the tokenizer.json that `autoneg tokenizer train` writes from
               tests/ref/tokenizers/train_corpus.txt (vocab 512); needs build/autoneg
  tsmetafirst, tsmetaalways  TinyStories' tokenizer.json with the normalizer removed and a Metaspace
               pre-tokenizer instead (prepend_scheme "first", split false: what transformers writes for
               non-legacy Llama tokenizers; prepend_scheme "always", split true: the older default);
               the C test makes the same edit with metaspace_variant()
  trainedprefix  that tokenizer with ByteLevel(add_prefix_space=True), saved by HF itself to
               tests/ref/tokenizers/trained-prefix/tokenizer.json
--only a,b regenerates only those id files (the texts are sampled the same way every time).

transformers 5.23's LlamaTokenizer built from the bare llama2/tokenizer.model is not used as a
reference: it is not legacy-compatible (" a" -> [263] where sentencepiece gives [29871, 263]) and
matches "<s>" in text; real Llama 2 tokenizer.json files use the legacy Prepend/Replace normalizer,
which TinyStories' tokenizer.json checks.
"""
import argparse
import gzip
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizers")
REPO = os.path.dirname(os.path.dirname(HERE))

EDGE = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "a", " a", "a ", "a  ", "  a", "a  b", "a   b", "a\tb", "a\t\tb",
    "a \tb", "a\t b", "a\nb", "a\r\nb", "a\n\nb", "line one\nline two\n", "trailing spaces   ", "\u00a0nbsp\u00a0x",
    "a\u00a0\u00a0b", "x\u3000y", "em\u2003space", "tab\tthen text", "  leading and trailing  ",
    "Hello world", "Hello, world!", "it's", "It's", "I'm you're we've they'll she'd", "'s 't 're 've 'm 'll 'd",
    "don't", "DON'T", "O'Neil's", "''s", " 's", "x's", "?'s", "rock'n'roll",
    "masterpiece, best quality, (ultra detailed:1.2), [cat:dog:0.5], {blue|red}",
    "(worst quality, low quality:1.4), bad-hands-5, EasyNegative, ng_deepnegative_v1_75t",
    "8k uhd, 35mm, f/1.8, ISO 100, 1/250s", "1234567890", "3.14159 2,718 1e-5 -42 +7", "12abc34", "abc123def",
    "٠١٢٣٤٥٦٧٨٩", "१२३", "①②③", "Ⅻ", "½ ¾", "²³", "〇一二三",
    "Grüße aus München", "naïve café résumé", "Ελληνικά γράμματα", "Русский текст, ёлка", "עברית",
    "العربية مع أرقام ١٢٣", "हिन्दी भाषा", "বাংলা", "ภาษาไทย", "한국어 텍스트", "日本語のテキスト、カタカナ", "中文提示词：高质量，杰作",
    "tiếng Việt", "Ǆemal", "ﬁne ﬂow", "Ａｂｃ　全角", "ꙮ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚",
    "e\u0301 combining acute", "a\u0300\u0301\u0302 stacked", "\u0301 leading combining", "n\u0303o",
    "emoji 😀😃😄", "👍🏽 skin tone", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇩🇪🇯🇵 flags", "❤️ heart", "🤖!",
    "\u200b zero width", "a\u200db", "\ufeffbom", "\u2028sep\u2029", "\x00nul", "a\x00b\x00", "\x07bell\x1b[0m", "\x7f\x80",
    "<unk>", "<s>", "</s>", "<|endoftext|>", "<0x41>", "[UNUSED_TOKEN_146]", "▁already▁escaped", "▁",
    "<|start_story|>Once upon a time<|end_story|>", "hello <|end_story|> world", "<|end_story|>x", " <|end_story|>", "a <|start_story|> b", "<unk>x<unk>", "a<unk>b",
    "<|im_start|>user\nA cat on a sofa<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|>",
    "x<|im_start|>y", "<|im_start", "im_end|>", "<|plugin|><|interpreter|><|action_start|><|action_end|>",
    "a" * 300, "ab" * 200, "!" * 100, " " * 50 + "x", "word " * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "https://example.com/path?query=1&x=y#frag", "user@example.com", "C:\\Users\\x\\file.txt",
    "def f(x):\n    return x ** 2\n", "{\"json\": [1, 2, 3]}", "$100 €50 ¥1000 £5", "100% ~50% <>=!",
    "ALL CAPS PROMPT", "MiXeD cAsE", "snake_case camelCase kebab-case", "...", "---", "!!!???", "。，、",
]


def style_texts(shared):
    out = []

    def add(src, s):
        if isinstance(s, str) and s.strip():
            out.append((src, s))

    d = os.path.join(shared, "data")
    for sub in ["comfyui-promptstylers", "sdxl-prompt-styler"]:  # MIT
        for fn in sorted(os.listdir(os.path.join(d, sub))):
            for row in json.load(open(os.path.join(d, sub, fn), encoding="utf-8")):
                add(f"{sub}/{fn}", row.get("prompt"))
                add(f"{sub}/{fn}", row.get("negative_prompt"))
    for fn in sorted(os.listdir(os.path.join(d, "ai-horde-styles"))):  # CC0
        for k, v in json.load(open(os.path.join(d, "ai-horde-styles", fn), encoding="utf-8")).items():
            for part in str(v.get("prompt", "")).split("###"):
                add(f"ai-horde-styles/{fn}", part)
    import csv
    for fn in ["styles.csv", "ref.csv"]:  # MIT
        with open(os.path.join(d, "a1111-styles-gaseousice", fn), encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                add(f"a1111-styles-gaseousice/{fn}", row.get("prompt"))
                add(f"a1111-styles-gaseousice/{fn}", row.get("negative_prompt"))
    for row in json.load(open(os.path.join(d, "sd-keyword-generator-gpt2", "dataset.json"), encoding="utf-8")):  # MIT
        for s in row[:3]:
            add("sd-keyword-generator-gpt2/dataset.json", s)
    seen, uniq = set(), []
    for src, s in out:
        if s not in seen:
            seen.add(s)
            uniq.append((src, s))
    return uniq


def civitai_lines(shared, n, rng):
    path = os.path.join(shared, "data", "real-pairs", "civitai-sfw", "train.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(l) for l in f]
    picks = sorted(rng.sample(range(len(rows)), n))
    return [(i, fld, rows[i][fld]) for i in picks for fld in ("prompt", "negative_prompt")]


def llama2c_load(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos, vocab, scores = 4, [], []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        vocab.append(data[pos:pos + n])
        scores.append(score)
        pos += n
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)
    return vocab, scores, lookup


def llama2c_encode(tok, text):
    """llama2.c run.c encode(): dummy prefix " ", UTF-8 characters or byte+3, best-score merges."""
    vocab, scores, lookup = tok
    ids = []
    if text:
        ids.append(lookup[b" "])
    for ch in text:
        b = ch.encode("utf-8", "surrogatepass")
        if b in lookup:
            ids.append(lookup[b])
        else:
            ids.extend(x + 3 for x in b)
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(ids) - 1):
            j = lookup.get(vocab[ids[i]] + vocab[ids[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            return ids
        ids[best_i:best_i + 2] = [best_id]


def split_specials(text, specials):
    """Longest-first split at special tokens: [(is_special, text)]."""
    specials = sorted(specials, key=len, reverse=True)
    out, seg, i = [], 0, 0
    while i < len(text):
        m = next((s for s in specials if text.startswith(s, i)), None)
        if m:
            if i > seg:
                out.append((False, text[seg:i]))
            out.append((True, m))
            i += len(m)
            seg = i
        else:
            i += 1
    if seg < len(text):
        out.append((False, text[seg:]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--templates", type=int, default=1500)
    ap.add_argument("--civitai", type=int, default=300)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    S = os.path.abspath(args.shared)
    rng = random.Random(1234)

    import sentencepiece as spm
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    entries, texts = [], []
    for s in EDGE:
        # C strings end at NUL: such texts go as hex
        entries.append({"text_hex": s.encode().hex(), "src": "edge"} if "\x00" in s else {"text": s, "src": "edge"})
        texts.append(s)
    styles = style_texts(S)
    for src, s in rng.sample(styles, min(args.templates, len(styles))):
        entries.append({"text": s, "src": src})
        texts.append(s)
    for i, fld, s in civitai_lines(S, args.civitai, rng):
        entries.append({"civitai": i, "field": fld})
        texts.append(s)
    with open(os.path.join(OUT, "texts.jsonl"), "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")

    # a committed MIT/CC0 corpus for the training test: style templates not in the sample above
    with open(os.path.join(OUT, "train_corpus.txt"), "w", encoding="utf-8") as f:
        for src, s in styles[:800]:
            f.write(s.replace("\r", " ").replace("\n", " ") + "\n")

    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only

    def write_ids(name, rows):
        with gzip.GzipFile(os.path.join(OUT, f"ids_{name}.txt.gz"), "wb", mtime=0) as f:
            for ids in rows:
                f.write((" ".join(map(str, ids)) + "\n").encode())
        print(f"{name}: {sum(map(len, rows))} ids", file=sys.stderr)

    T = os.path.join(S, "data", "tokenizers")
    if want("gpt2"):
        gpt2_ids(T, texts, write_ids)
    if want("llama2") or want("llama2c32k"):
        llama = spm.SentencePieceProcessor(model_file=os.path.join(T, "llama2", "tokenizer.model"))
    if want("llama2"):
        write_ids("llama2", [llama.encode(t) for t in texts])
    if want("internlm2") or want("internlm2chat"):
        intern = spm.SentencePieceProcessor(model_file=os.path.join(T, "internlm2", "tokenizer_internlm2.model"))
    if want("internlm2"):
        write_ids("internlm2", [intern.encode(t) for t in texts])
    if want("internlm2chat"):
        cfg = json.load(open(os.path.join(OUT, "internlm2-chat", "tokenizer_config.json")))
        chat = {v["content"]: int(k) for k, v in cfg["added_tokens_decoder"].items()}
        rows = []
        for t in texts:
            ids = []
            for is_sp, part in split_specials(t, chat):
                ids.extend([chat[part]] if is_sp else intern.encode(part))
            rows.append(ids)
        write_ids("internlm2chat", rows)
    if want("tinystories"):
        ts = Tokenizer.from_file(os.path.join(S, "models", "TinyStories-656K", "tokenizer.json"))
        write_ids("tinystories", [ts.encode(t, add_special_tokens=False).ids for t in texts])
    for name, scheme, split in [("tsmetafirst", "first", False), ("tsmetaalways", "always", True)]:
        if want(name):
            j = json.load(open(os.path.join(S, "models", "TinyStories-656K", "tokenizer.json"), encoding="utf-8"))
            j["normalizer"] = None
            j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
            j["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
            tm = Tokenizer.from_str(json.dumps(j))
            write_ids(name, [tm.encode(t, add_special_tokens=False).ids for t in texts])
    if want("llama2c32k"):
        l32 = llama2c_load(os.path.join(S, "models", "llama2c-tokenizer-32k", "tokenizer.bin"))
        rows = [llama2c_encode(l32, t) for t in texts]
        diff = sum(r != llama.encode(t) for r, t in zip(rows, texts))
        print(f"llama2.c encode differs from sentencepiece on {diff} of {len(texts)} texts", file=sys.stderr)
        write_ids("llama2c32k", rows)
    if want("stories260k"):
        l260 = llama2c_load(os.path.join(S, "models", "stories260K", "tok512.bin"))
        write_ids("stories260k", [llama2c_encode(l260, t) for t in texts])
    exe = os.path.join(REPO, "build", "autoneg")
    if (want("trained") or want("trainedprefix")) and os.path.exists(exe):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([exe, "tokenizer", "train", "--data", os.path.join(OUT, "train_corpus.txt"), "--vocab", "512",
                            "--out", tmp], check=True)
            tr = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
            rows = [tr.encode(t, add_special_tokens=False).ids for t in texts]
            assert all(tr.decode(ids, skip_special_tokens=False) == t for ids, t in zip(rows, texts))
            write_ids("trained", rows)
            tr.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            os.makedirs(os.path.join(OUT, "trained-prefix"), exist_ok=True)
            tr.save(os.path.join(OUT, "trained-prefix", "tokenizer.json"))
            write_ids("trainedprefix", [tr.encode(t, add_special_tokens=False).ids for t in texts])
    elif want("trained"):
        print("build/autoneg missing: ids_trained not written", file=sys.stderr)


def gpt2_ids(T, texts, write_ids):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    g = Tokenizer(models.BPE.from_file(os.path.join(T, "gpt2", "encoder.json"), os.path.join(T, "gpt2", "vocab.bpe")))
    g.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    g.decoder = decoders.ByteLevel()
    gpt2 = [g.encode(t).ids for t in texts]
    assert all(g.decode(ids) == t for ids, t in zip(gpt2, texts))
    write_ids("gpt2", gpt2)



main()
