#!/bin/sh
# `autoneg serve` through curl, as a user's shell script talks to it (part of make test; needs curl and
# jq, which make deps installs, and ../shared's TinyStories-656K). Each check compares with an
# independent reference: the negatives and the completion text with what `autoneg generate` prints for
# the same prompt and greedy decoding, the streamed text with the whole one, the error objects with
# OpenAI's shape. Prints "[ ok ] name" per check and "N passed, M failed" last, as the C tests do.
BUILD=${BUILD:-build}
SHARED=${AN_SHARED:-../shared}
MODEL=$SHARED/models/TinyStories-656K
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "[ ok ] $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', expected '$3'"; fi; }
# printf, not echo: sh's echo turns the JSON's \n escapes into newlines
json() { printf '%s\n' "$1" | jq "$2" "$3"; }
for tool in curl jq; do
    command -v $tool >/dev/null 2>&1 || { echo "  FAIL $tool is not installed (make deps installs it)"; echo "0 passed, 1 failed"; exit 1; }
done
[ -d "$MODEL" ] || { echo "  FAIL $MODEL: missing (../shared beside the repository)"; echo "0 passed, 1 failed"; exit 1; }

TMP=$(mktemp -d /tmp/autoneg-curl-XXXXXX)
KEY=curl-key-$$
OMP_NUM_THREADS=1 "$BUILD/autoneg" serve --model "$MODEL" --name tiny --port 0 --api-key "$KEY" 2>"$TMP/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 200); do grep -q "ready:" "$TMP/serve.log" && break; kill -0 $PID 2>/dev/null || break; sleep 0.05; done
URL=http://127.0.0.1:$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$TMP/serve.log")
grep -q "ready:" "$TMP/serve.log" && ok "serve starts and says where it listens" || { cat "$TMP/serve.log"; bad "serve did not start"; }
AUTH="Authorization: Bearer $KEY"
post() { curl -s -m 60 -H "$AUTH" -H "Content-Type: application/json" "$URL$1" -d "$2"; }
status() { curl -s -m 60 -o /dev/null -w '%{http_code}' "$@"; }

check "GET /health needs no key" "$(status "$URL/health")" 200
check "no key: 401" "$(status "$URL/v1/models")" 401
check "no key: an OpenAI error object" "$(curl -s -m 60 "$URL/v1/models" | jq -r '.error.type')" "invalid_request_error"
check "GET /v1/models lists the base by its name" "$(curl -s -m 60 -H "$AUTH" "$URL/v1/models" | jq -r '.data[0].id')" tiny

# /v1/negatives against generate: the same template, greedy, 16 tokens (generate prints a newline of the
# text as a space)
want=$(OMP_NUM_THREADS=1 "$BUILD/autoneg" generate --model "$MODEL" --prompt "a cat in a garden" --temperature 0 \
    --max-tokens 16 2>/dev/null)
got=$(post /v1/negatives '{"prompts": ["a cat in a garden", "a cat in a garden"], "temperature": 0, "max_tokens": 16}')
check "/v1/negatives: one per prompt" "$(json "$got" -r '.negatives | length')" 2
check "/v1/negatives equals autoneg generate" "$(json "$got" -j '.negatives[1]' | tr '\n' ' ')" "$want"

# a raw completion against generate --raw (the same tokens; generate prints them on one line, each
# newline as a space)
want=$(OMP_NUM_THREADS=1 "$BUILD/autoneg" generate --model "$MODEL" --raw --prompt "Once upon a time" --temperature 0 \
    --max-tokens 24 2>/dev/null)
whole=$(post /v1/completions '{"prompt": "Once upon a time", "temperature": 0, "max_tokens": 24}')
check "/v1/completions equals autoneg generate --raw" "$(json "$whole" -j '.choices[0].text' | tr '\n' ' ')" "$want"
check "/v1/completions usage counts 24 tokens" "$(json "$whole" -r '.usage.completion_tokens')" 24

# streamed: server-sent events whose deltas make the whole text, [DONE] last
post /v1/completions '{"prompt": "Once upon a time", "temperature": 0, "max_tokens": 24, "stream": true}' >"$TMP/sse"
streamed=$(sed -n 's/^data: //p' "$TMP/sse" | grep -v '^\[DONE\]$' | jq -j '.choices[0].text // ""')
check "streamed deltas make the whole text" "$streamed" "$(json "$whole" -j '.choices[0].text')"
check "the stream ends with data: [DONE]" "$(grep '^data:' "$TMP/sse" | tail -n 1)" "data: [DONE]"

# bad input: 4xx with the field named, and the server goes on
r=$(post /v1/completions '{"prompt": "x", "max_tokens": ')
check "malformed JSON: invalid_request_error" "$(json "$r" -r '.error.type')" invalid_request_error
check "malformed JSON: 400" "$(status -H "$AUTH" "$URL/v1/completions" -d '{"prompt": ')" 400
check "a negative max_tokens names the field" "$(post /v1/completions '{"prompt": "x", "max_tokens": -3}' | jq -r '.error.param')" max_tokens
check "an unknown model: 404" "$(status -H "$AUTH" "$URL/v1/completions" -d '{"prompt": "x", "model": "nope"}')" 404
check "still serving after bad requests" "$(status "$URL/health")" 200

# SIGTERM: a clean exit
kill -TERM $PID
for _ in $(seq 100); do kill -0 $PID 2>/dev/null || break; sleep 0.05; done
wait $PID
check "SIGTERM stops the server with status 0" "$?" 0
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
