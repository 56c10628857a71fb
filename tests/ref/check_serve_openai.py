"""`autoneg serve` against the official openai package (tests/ref/check_serve.sh runs it; not in make test).

    python check_serve_openai.py BASE_URL API_KEY MODEL_ID ADAPTER_ID

Completions, chat, streaming (both), models, /v1/negatives by plain HTTP, and the errors the client
maps to its exception classes: 401 AuthenticationError, 404 NotFoundError, 400 BadRequestError.
Checks what the server answers against what must hold: the streamed text equals the text of the same
request without streaming (same seed), usage counts agree, a stop string never appears in the text."""
import json
import sys
import urllib.request

import openai

base, key, model, adapter = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
failed = 0


def check(cond, what):
    global failed
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failed += 1


# models: the base and the adapter, the adapter with its parent
ids = [m.id for m in client.models.list().data]
check(ids == [model, adapter], f"models.list: {ids}")

# completions, then the same request streamed: the same text
c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=24, seed=5, temperature=0.7)
text = c.choices[0].text
check(c.object == "text_completion" and len(text) > 0, f"completions.create: {text!r}")
check(c.usage.completion_tokens <= 24 and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens,
      f"usage {c.usage}")
check(c.choices[0].finish_reason in ("stop", "length"), f"finish_reason {c.choices[0].finish_reason}")
parts = [ch.choices[0].text for ch in client.completions.create(model=model, prompt="Once upon a time", max_tokens=24,
                                                                seed=5, temperature=0.7, stream=True) if ch.choices]
check("".join(parts) == text and len(parts) > 1, f"streamed completion in {len(parts)} chunks equals the whole")

# a stop string taken from the text: cut before it, finish_reason stop
stop = text[len(text) // 2:len(text) // 2 + 3]
c2 = client.completions.create(model=model, prompt="Once upon a time", max_tokens=24, seed=5, temperature=0.7, stop=[stop])
check(c2.choices[0].text == text[:text.index(stop)] and c2.choices[0].finish_reason == "stop",
      f"stop {stop!r}: {c2.choices[0].text!r}")

# n samples, and an adapter by its name
c3 = client.completions.create(model=adapter, prompt=["a cat", "a dog"], max_tokens=8, n=2, seed=1)
check(len(c3.choices) == 4 and sorted(ch.index for ch in c3.choices) == [0, 1, 2, 3] and c3.model == adapter,
      f"two prompts, n=2, adapter {adapter}: {len(c3.choices)} choices")

# chat, then streamed
msgs = [{"role": "user", "content": "a castle at dusk"}]
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=20, seed=3)
answer = r.choices[0].message.content
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", f"chat: {answer!r}")
chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=20, seed=3, stream=True,
                                             stream_options={"include_usage": True}))
streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
check(streamed == answer, f"streamed chat equals the whole ({len(chunks)} chunks)")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens,
      "the usage chunk at the end of the stream")
lp = client.chat.completions.create(model=model, messages=msgs, max_tokens=5, seed=3, logprobs=True, top_logprobs=3)
check(len(lp.choices[0].logprobs.content) == lp.usage.completion_tokens and
      all(t.logprob <= 0 for t in lp.choices[0].logprobs.content), "chat logprobs: one per token, each <= 0")
check(all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
          and t.top_logprobs[0].logprob >= t.logprob and isinstance(t.top_logprobs[0].bytes, list)
          for t in lp.choices[0].logprobs.content), "chat top_logprobs 3: the client parses 3 alternatives a token, in order")
cl = client.completions.create(model=model, prompt="a red car", max_tokens=5, seed=3, logprobs=2)
check(len(cl.choices[0].logprobs.top_logprobs) == len(cl.choices[0].logprobs.tokens) and
      all(1 <= len(d) <= 2 for d in cl.choices[0].logprobs.top_logprobs), "completion logprobs 2: a dict of alternatives a token")

# /v1/negatives by plain HTTP
req = urllib.request.Request(base + "/v1/negatives", data=json.dumps({"prompts": ["a cat", "a dog"], "seed": 9}).encode(),
                             headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
neg = json.load(urllib.request.urlopen(req))
check(len(neg["negatives"]) == 2 and all(isinstance(x, str) for x in neg["negatives"]), f"negatives: {neg['negatives']}")

# errors, as the client's exception classes
def expect(exc, fn, what):
    try:
        fn()
        check(False, what + ": no error")
    except exc as e:
        check(isinstance(e.body, dict) and "message" in e.body, f"{what}: {type(e).__name__} {e.status_code}")


expect(openai.AuthenticationError, lambda: openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list(),
       "wrong key")
expect(openai.NotFoundError, lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=2), "unknown model")
expect(openai.BadRequestError, lambda: client.completions.create(model=model, prompt="x", max_tokens=-5), "max_tokens -5")
expect(openai.BadRequestError, lambda: client.completions.create(model=model, prompt="x", temperature=9), "temperature 9")
expect(openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=[], max_tokens=2), "no messages")
expect(openai.BadRequestError,
       lambda: client.completions.create(model=model, prompt="x", extra_body={"not_a_field": 1}), "unknown field")

print(f"check_serve_openai: {failed} failed")
sys.exit(1 if failed else 0)
