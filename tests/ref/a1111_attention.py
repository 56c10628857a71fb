"""A re-statement of A1111's parse_prompt_attention behaviour (modules/prompt_parser.py), written from
its documented rules, used to double-check the hand-computed weights in tests/test_prompt_syntax.c.
Run: python tests/ref/a1111_attention.py  (prints one line per case: repr of the chunk list)."""
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

if __name__ == "__main__":
    for c in CASES:
        print(repr(c), "->", [(t, repr(w)) for t, w in parse(c)])
