#!/bin/sh
# Writes the seed corpus of every fuzz target into fuzz/corpus/NAME/ (committed; rerun it only to
# change the seeds). Seeds are small valid inputs from this repository's own files (tests/ref,
# configs, datasets: MIT / CC0) or made here; a target's first byte picks the file kind where it
# has several (fuzz/targets_*.c). Needs build/autoneg and python3 (standard library only).
set -e
cd "$(dirname "$0")/.."
C=fuzz/corpus
rm -rf "$C"
mkdir -p "$C"/safetensors "$C"/config "$C"/tokenizer "$C"/bpe_files "$C"/llama2c "$C"/pairs "$C"/recipe \
         "$C"/prompt "$C"/template "$C"/checkpoint "$C"/peft "$C"/gguf "$C"/retrieval "$C"/serve_request
cp tests/ref/st_python.safetensors "$C"/safetensors/
cp tests/ref/gguf/meta.gguf tests/ref/gguf/q4_0.gguf "$C"/gguf/
cp tests/ref/config_llama.json tests/ref/config_gpt2.json tests/ref/config_qwen2.json "$C"/config/
cp configs/recipes/tiny-from-scratch.json "$C"/recipe/
python3 - "$C" <<'PY'
import gzip, io, json, struct, sys, zipfile
C = sys.argv[1]
def put(path, data):
    with open(f"{C}/{path}", "wb") as f:
        f.write(data)
# a tokenizer.json (kind 0) and a llama2.c tokenizer.bin (kind 2) of a handful of tokens
tj = open("tests/ref/tokenizers/trained-prefix/tokenizer.json", "rb").read()
put("tokenizer/trained-prefix.json", b"\x00" + tj)
pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([c]) for c in b"abc "] + [b"ab", b" a", b"abc"]
tb = struct.pack("<i", 8) + b"".join(struct.pack("<fi", -float(i), len(p)) + p for i, p in enumerate(pieces))
put("tokenizer/tiny.bin", b"\x02" + tb)
# vocab.json + merges.txt: GPT-2's 256 byte symbols (bytes_to_unicode) and three merges
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, k = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + k)
        k += 1
vocab = {chr(c): i for i, c in enumerate(cs)}
for m in ["ab", "\u0120a", "abc"]:
    vocab[m] = len(vocab)
merges = "#version: 0.2\na b\n\u0120 a\nab c\n"
put("bpe_files/tiny", json.dumps(vocab).encode() + b"\x00" + merges.encode())
# a llama2.c model: dim 8, hidden 16, 1 layer, 2 heads, 10 tokens, 8 positions, shared classifier
dim, hid, L, nh, nkv, V, T = 8, 16, 1, 2, 2, 10, 8
hs = dim // nh
n = V * dim + L * dim + 4 * L * dim * dim + L * dim + 3 * L * dim * hid + dim + T * hs // 2 * 2
w = b"".join(struct.pack("<f", ((i * 37) % 17 - 8) / 32.0) for i in range(n))
put("llama2c/tiny.bin", struct.pack("<7i", dim, hid, L, nh, nkv, V, T) + w)
# pair files: jsonl, json, csv, gzip'd jsonl, zip of a jsonl (the first byte picks the kind)
rows = [{"prompt": "a cat, masterpiece", "negative_prompt": "blurry, lowres"},
        {"prompt": "castle at dusk", "negative_prompt": "(worst quality:1.4), watermark", "source": "s1"}]
jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
put("pairs/a.jsonl", b"\x00" + jsonl)
put("pairs/b.json", b"\x01" + json.dumps([{"name": "x", "prompt": "{prompt}, film", "negative_prompt": "cgi"}]).encode())
put("pairs/c.csv", b"\x02" + b"name,prompt,negative_prompt\nx,\"a, b\",\"c \"\"d\"\"\"\n")
put("pairs/d.gz", b"\x03" + gzip.compress(jsonl, mtime=0))
z = io.BytesIO()
with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr(zipfile.ZipInfo("pairs.jsonl", date_time=(1980, 1, 1, 0, 0, 0)), jsonl)
put("pairs/e.zip", b"\x04" + z.getvalue())
# prompt syntax, both modes
put("prompt/a1111", b"\x00(masterpiece:1.2), [blurry], ((worst quality)), \\(x\\), (a:b:0.5), embedding:neg")
put("prompt/novelai", b"\x01{best}, [[bad]], (plain), {{{very}}}")
# a template as a recipe gives it
put("template/custom.json", json.dumps({"base": "default", "INSTRUCTION": "Prompt: {input}\nNegative:",
                                        "SUFFIX": "\n"}).encode())
put("template/chat.json", json.dumps({"base": "internlm2_chat", "SEP": ""}).encode())
# chat templates (Jinja) as a GGUF carries them: byte 1, then the source
put("template/jinja_chatml", b"\x01{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    b"message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
put("template/jinja_llama3", b"\x01{% set content = '<|start_header_id|>' + message['role'] + "
    b"'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}")
put("template/jinja_llama2", b"\x01{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% if system %}<<SYS>>{% endif %}")
PY
# a PEFT adapter for the llama fixture: adapter_config.json, byte 0, adapter_model.safetensors
{ cat tests/ref/lora/llama/adapter_config.json; printf '\000'; cat tests/ref/lora/llama/adapter_model.safetensors; } \
    > "$C"/peft/llama
# HTTP requests to the serve handler: "METHOD PATH [AUTHORIZATION]", a newline, the body
S="$C"/serve_request
printf 'POST /v1/completions Bearer key\n{"prompt": "a cat", "max_tokens": 4, "seed": 1, "stop": ["x"], "logprobs": 0}' > "$S"/completion
printf 'POST /v1/completions Bearer key\n{"prompt": ["a", "b c"], "n": 2, "stream": true, "stream_options": {"include_usage": true}}' > "$S"/completion-stream
printf 'POST /v1/chat/completions Bearer key\n{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], "max_tokens": 3, "logprobs": true}' > "$S"/chat
printf 'POST /v1/chat/completions Bearer key\n{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": true}' > "$S"/chat-stream
printf 'POST /v1/negatives Bearer key\n{"prompts": ["a cat, masterpiece", "castle"], "seed": 7, "temperature": 0}' > "$S"/negatives
printf 'POST /v1/negatives Bearer key\n{"prompts": ["a cat"], "stream": true, "n": 2}' > "$S"/negatives-stream
printf 'GET /v1/models Bearer key\n' > "$S"/models
printf 'GET /health\n' > "$S"/health
printf 'GET /metrics Bearer key\n' > "$S"/metrics
# a retrieval index of four prompts (infer/retrieval.h), written by the library itself
cat > "$C"/retrieval/make.c <<'CEOF'
#include "infer/retrieval.h"
int main(int argc, char **argv) {
    const char *texts[] = {"a cat, masterpiece", "castle at dusk, film grain", "a dog, blurry", "cat, dog, portrait"};
    const char *src[] = {"s1", "s2", "s1", "s3"};
    an_error err;
    an_tfidf *ix = an_tfidf_build_src(texts, src, 4, &err);
    return argc < 2 || !ix || an_tfidf_save(ix, argv[1], &err);
}
CEOF
cc -std=c11 -D_GNU_SOURCE -I. "$C"/retrieval/make.c build/libautoneg.a -lcjson -lz -lm -fopenmp \
    -L/usr/lib/x86_64-linux-gnu/openblas-openmp -lopenblas -o "$C"/retrieval/make
"$C"/retrieval/make "$C"/retrieval/four-prompts.idx
rm "$C"/retrieval/make "$C"/retrieval/make.c
# a checkpoint: two LoRA steps of rank 1 on q_proj of the tiny TinyStories model (a few KB)
T=$(mktemp -d)
build/autoneg train --base "${AN_SHARED:-../shared}/models/TinyStories-656K" --method lora \
    --data datasets/sdxl_styles_twri.json --out "$T/run" --steps 2 --set lora.r=1 --set lora.target_modules=q_proj \
    --set train.seq_len=96 --set data.max_length=96 --set train.batch_size=1 --set checkpoint.every=1 \
    --set train.threads=1 2>/dev/null
cp "$(ls "$T"/run/checkpoints/*.ckpt | tail -n 1)" "$C"/checkpoint/lora-r1.ckpt
rm -rf "$T"
du -sh "$C"
