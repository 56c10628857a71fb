"""A re-statement of A1111's parse_prompt_attention behaviour (modules/prompt_parser.py), written from
its documented rules, used to double-check the hand-computed weights in tests/test_prompt_syntax.c.
Run: python tests/ref/a1111_attention.py  (prints one line per case: repr of the chunk list)
     python tests/ref/a1111_attention.py --fixture tests/ref/a1111_random.txt"""
import re

TOKEN = re.compile(r"""\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:""", re.X)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(text):
    res, rounds, squares = [], [], []

    def mul(start, m):
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in TOKEN.finditer(text):
        t, w = m.group(0), m.group(1)
        if t.startswith("\\"):
            res.append([t[1:], 1.0])
        elif t == "(":
            rounds.append(len(res))
        elif t == "[":
            squares.append(len(res))
        elif w is not None and rounds:
            mul(rounds.pop(), float(w))
        elif t == ")" and rounds:
            mul(rounds.pop(), 1.1)
        elif t == "]" and squares:
            mul(squares.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(re.split(BREAK, t)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for p in rounds:
        mul(p, 1.1)
    for p in squares:
        mul(p, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


CASES = [
    "normal text", "an (important) word", "(unbalanced", "\\(literal\\]", "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", "((x))", "[x]", "[[x]]", "((a), b)",
    "(a:1.2), [b], c)", "a]b", "x:1.5)", "(a [b (c:0.5)])", "", "\\", "a BREAK b", "(a BREAK b)",
    "BREAKfast, a BREAK", "(x: 1.25 )", "(x:-0.5)", "[(a:1.5)]", "(a\\\\b)", "a\\b",
]



def random_cases(n=400, seed=1234):
    """Random prompts over the characters that matter, for tests/ref/a1111_random.txt. Cases where
    A1111 itself raises (a weight like "1.2.3" that float() rejects) are left out."""
    import random
    rnd = random.Random(seed)
    atoms = ["(", ")", "[", "]", "\\", ":", ":1.5)", ": 0.8 )", ":-1)", "a", "b c", ", ", " ", "BREAK", " BREAK ",
             "x_y", "\\(", "\\)", "1", ".", "é", "\n"]
    out = []
    while len(out) < n:
        text = "".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 14)))
        try:
            out.append((text, parse(text)))
        except ValueError:
            continue
    return out


def write_random_fixture(path):
    """Lines: the prompt as JSON, then TAB-separated chunk text (JSON) and weight (repr) pairs."""
    import json
    with open(path, "w", encoding="utf-8") as f:
        for text, chunks in random_cases():
            f.write(json.dumps(text) + "".join("\t%s\t%r" % (json.dumps(t), float(w)) for t, w in chunks) + "\n")


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--fixture":
        write_random_fixture(sys.argv[2])
    else:
        for c in CASES:
            print(repr(c), "->", [(t, repr(w)) for t, w in parse(c)])
