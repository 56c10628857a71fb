#!/bin/sh
# `autoneg serve` against real clients (not part of make test): the official openai package
# (tests/ref/check_serve_openai.py) and the web page in headless Chromium through selenium
# (tests/ref/check_serve_page.py, which saves a screenshot). Needs a Python with openai and selenium
# ($AN_VENV, else ~/.cache/autoneg-venv) and Debian's chromium and chromium-driver; with Debian's
# firefox-esr and marionette-driver (PyPI) in the same Python, the page in headless Firefox too
# (tests/ref/check_serve_page_firefox.py; its screenshot beside the first, -firefox before .png).
#   sh tests/ref/check_serve.sh [SCREENSHOT.png]
set -e
BUILD=${BUILD:-build}
SHARED=${AN_SHARED:-../shared}
VENV=${AN_VENV:-$HOME/.cache/autoneg-venv}
PY="$VENV/bin/python"
SHOT=${1:-/tmp/autoneg-serve-page.png}
"$PY" -c "import openai, selenium" || { echo "check_serve: $PY lacks openai or selenium (pip install openai selenium)"; exit 1; }
TMP=$(mktemp -d /tmp/autoneg-serve-XXXXXX)
# an adapter to serve by name: two LoRA steps on the tiny model
"$BUILD/autoneg" train --base "$SHARED/models/TinyStories-656K" --method lora --data datasets/sdxl_styles_twri.json \
    --out "$TMP/lora" --steps 2 --set train.seq_len=64 --set data.max_length=64 --set train.batch_size=2 \
    --set optim.lr=0.05 --set train.threads=1 2>"$TMP/train.log" || { cat "$TMP/train.log"; exit 1; }
KEY=check-key-$$
"$BUILD/autoneg" serve --model "$SHARED/models/TinyStories-656K" --name tiny --adapter "style=$TMP/lora/final" --port 0 \
    --api-key "$KEY" 2>"$TMP/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do grep -q "ready:" "$TMP/serve.log" && break; kill -0 $PID 2>/dev/null || break; sleep 0.1; done
grep -q "ready:" "$TMP/serve.log" || { cat "$TMP/serve.log"; exit 1; }
PORT=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/serve.log")
[ -n "$PORT" ] || { cat "$TMP/serve.log"; exit 1; }
fail=0
echo "== openai $("$PY" -c 'import openai; print(openai.__version__)') against http://127.0.0.1:$PORT"
"$PY" tests/ref/check_serve_openai.py "http://127.0.0.1:$PORT" "$KEY" tiny style || fail=1
echo "== the page in headless Chromium"
"$PY" tests/ref/check_serve_page.py "http://127.0.0.1:$PORT" "$KEY" style "$SHOT" || fail=1
if command -v firefox-esr >/dev/null 2>&1 && "$PY" -c "import marionette_driver" 2>/dev/null; then
    echo "== the page in headless Firefox"
    "$PY" tests/ref/check_serve_page_firefox.py "http://127.0.0.1:$PORT" "$KEY" style "${SHOT%.png}-firefox.png" || fail=1
else
    echo "== the page in Firefox: skipped (needs firefox-esr and pip install marionette-driver)"
fi
kill -TERM $PID
wait $PID && echo "serve exited 0 on SIGTERM" || { echo "serve did not exit 0"; fail=1; }
trap 'rm -rf "$TMP"' EXIT
exit $fail
