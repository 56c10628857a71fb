"""Reference pre-tokenization for Llama 3 and Qwen2 (tests/test_pretok_llama3.c).

Hugging Face tokenizers' Split pre-tokenizer with the regexes Llama 3's and Qwen2's tokenizer.json
carry (the same strings llama.cpp uses for tokenizer.ggml.pre llama-bpe / qwen2), run over the bundled
style prompts (datasets/, MIT / CC0) and hand-made hard cases. Writes tests/ref/pretok/pieces.json:
[{"text": ..., "llama3": [piece, ...], "qwen2": [...]}].
    python tests/ref/make_pretok_fixture.py   (tokenizers 0.23.3 made the committed file)"""
import json, os
from tokenizers import Regex, pre_tokenizers

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")

def splitter(rx):
    return pre_tokenizers.Split(Regex(rx), behavior="isolated", invert=False)

root = os.path.join(os.path.dirname(__file__), "..", "..")
texts = [
    "I'M here, you'RE there; we'Ve 'll 'D 'S 'T x'y '' 'sun",
    "12345678 1234 12 1 a1b22c333d4444 ½²³ ١٢٣٤",
    "a  \n\n  b\r\n\r\nc\t\td   ", "   leading", "trailing   ", " \n", "\n\nx", "!!!\n\n...", "x!!\r\n\r\ny",
    "naïve café 日本語の文章 Ελληνικά кириллица", "emoji 🙂🙂 and ✨sparkles✨", "(masterpiece:1.2), [blurry], ((worst quality))",
    "tab\tseparated\tvalues", "a\u00a0b\u2003c", "  \n  x", "$100.00 & 50% off!!", "snake_case camelCase kebab-case",
    "",
]
for f in ["sdxl_styles_twri.json", "sdxl_styles_sai.json"]:
    for e in json.load(open(os.path.join(root, "datasets", f))):
        texts.append(e["prompt"])
        texts.append(e.get("negative_prompt", ""))
l3, q2 = splitter(LLAMA3), splitter(QWEN2)
out = [{"text": t, "llama3": [p for p, _ in l3.pre_tokenize_str(t)], "qwen2": [p for p, _ in q2.pre_tokenize_str(t)]}
       for t in texts]
for o in out:
    assert "".join(o["llama3"]) == o["text"] and "".join(o["qwen2"]) == o["text"]
os.makedirs(os.path.join(root, "tests", "ref", "pretok"), exist_ok=True)
with open(os.path.join(root, "tests", "ref", "pretok", "pieces.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
print(len(out), "texts")
