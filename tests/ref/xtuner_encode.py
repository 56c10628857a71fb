"""Reference ids and labels for tests/test_template_xtuner.c: XTuner's template_map_fn + encode_fn
rules (xtuner/dataset/map_fns/template_map_fn.py, xtuner/dataset/utils.py; summarised in
../shared/reference/anchor-xtuner-qlora.md section 1.2), restated here on top of reference tokenizers:

  input  = SYSTEM.format(system) (if a system text is given) + INSTRUCTION.format(input=prompt, round=1)
  output = negative + SUFFIX
  ids    = [BOS] + encode(input) + encode(output) + ([EOS] if not SUFFIX_AS_EOS) + encode(SEP)
  labels = -100 for BOS, input and SEP; the ids for output and EOS; then truncate to max_len
  (encode = tokenizer.encode(text, add_special_tokens=False), one call per part)

Tokenizers:
  internlm2: sentencepiece on tokenizer_internlm2.model, with InternLM2's added tokens (ids 92538..92543,
             from its tokenizer_config.json added_tokens_decoder) split out of the text first, as HF does
             for added tokens (lstrip/rstrip false: whitespace next to them is kept); BOS 1, EOS 2.
  gpt2:      transformers GPT2Tokenizer on encoder.json + vocab.bpe; BOS = EOS = 50256.
  tinystories: tokenizers.Tokenizer on TinyStories-656K/tokenizer.json (normalizer prepends "▁" to each
             part, so the part boundaries show); BOS 1, EOS 2.
Run: HF_HUB_OFFLINE=1 python tests/ref/xtuner_encode.py > tests/ref/xtuner_cases.txt
Lines: tokenizer TAB template TAB case-index TAB ids TAB labels."""
import json
import os
import re
import sys

import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import GPT2Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("AN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))

TEMPLATES = {
    "infotext": dict(SYSTEM="{system}\n", INSTRUCTION="{input}\nNegative prompt: ", SUFFIX="", SUFFIX_AS_EOS=False,
                     SEP=""),
    "default": dict(SYSTEM="<|System|>:{system}\n", INSTRUCTION="<|User|>:{input}\n<|Bot|>:", SEP="\n"),
    "internlm2_chat": dict(SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
                           INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
                           SUFFIX="<|im_end|>", SUFFIX_AS_EOS=True, SEP="\n", STOP_WORDS=["<|im_end|>"]),
}

INTERNLM2_ADDED = {"<|plugin|>": 92538, "<|interpreter|>": 92539, "<|action_end|>": 92540,
                   "<|action_start|>": 92541, "<|im_end|>": 92542, "<|im_start|>": 92543}


def internlm2():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(SHARED, "data/tokenizers/internlm2/tokenizer_internlm2.model"))
    pat = re.compile("(" + "|".join(re.escape(k) for k in INTERNLM2_ADDED) + ")")

    def encode(text):
        ids = []
        for part in pat.split(text):
            if part in INTERNLM2_ADDED:
                ids.append(INTERNLM2_ADDED[part])
            elif part:
                ids.extend(sp.encode(part))
        return ids
    return encode, 1, 2


def gpt2():
    d = os.path.join(SHARED, "data/tokenizers/gpt2")
    vocab = json.load(open(os.path.join(d, "encoder.json"), encoding="utf-8"))
    lines = open(os.path.join(d, "vocab.bpe"), encoding="utf-8").read().split("\n")[1:]
    tok = GPT2Tokenizer(vocab=vocab, merges=[tuple(l.split(" ")) for l in lines if l])  # transformers 5 API
    return (lambda text: tok.encode(text, add_special_tokens=False)), tok.bos_token_id, tok.eos_token_id


def tinystories():
    tok = Tokenizer.from_file(os.path.join(SHARED, "models/TinyStories-656K/tokenizer.json"))
    return (lambda text: tok.encode(text, add_special_tokens=False).ids), 1, 2


def encode_fn(t, encode, bos, eos, prompt, negative, system, max_len):
    inp = t["INSTRUCTION"].format(input=prompt, round=1)
    if system:
        inp = t["SYSTEM"].format(system=system) + inp
    out = negative + (t.get("SUFFIX") or "")
    ids, labels = [bos], [-100]
    e = encode(inp)
    ids += e
    labels += [-100] * len(e)
    e = encode(out)
    ids += e
    labels += e
    if not t.get("SUFFIX_AS_EOS", False):
        ids.append(eos)
        labels.append(eos)
    if t.get("SEP", ""):
        e = encode(t["SEP"])
        ids += e
        labels += [-100] * len(e)
    if max_len and len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
    return ids, labels


def main():
    cases = json.load(open(os.path.join(HERE, "template_cases.json"), encoding="utf-8"))
    for tname, make in (("internlm2", internlm2), ("gpt2", gpt2), ("tinystories", tinystories)):
        encode, bos, eos = make()
        for name, t in TEMPLATES.items():
            for i, c in enumerate(cases):
                ids, labels = encode_fn(t, encode, bos, eos, c["prompt"], c["negative"], c.get("system", ""),
                                        c.get("max_len", 0))
                sys.stdout.write("%s\t%s\t%d\t%s\t%s\n" % (tname, name, i, " ".join(map(str, ids)),
                                                           " ".join(map(str, labels))))


if __name__ == "__main__":
    main()
