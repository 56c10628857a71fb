"""Single-thread encode speed of HF tokenizers and sentencepiece on the lines of a text file.
    bench_tokenizer.py KIND PATH TEXTFILE REPS   (KIND: hf-bytelevel | hf-json | spm)
prints one line per repetition: "MB/s ids"."""
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

kind, path, textfile, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
raw = open(textfile, "rb").read()
lines = raw.decode("utf-8").split("\n")
if kind == "spm":
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=path)
    enc = lambda: sp.encode(lines, num_threads=1)
else:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    if kind == "hf-bytelevel":
        tok = Tokenizer(models.BPE.from_file(os.path.join(path, "encoder.json"), os.path.join(path, "vocab.bpe")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok = Tokenizer.from_file(path)
    enc = lambda: [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
for _ in range(reps):
    t0 = time.process_time()
    out = enc()
    dt = time.process_time() - t0
    print(f"{len(raw) / dt / 1e6:.3f} {sum(map(len, out))}")
