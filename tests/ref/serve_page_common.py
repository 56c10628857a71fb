"""What the two page checks (check_serve_page.py in Chromium, check_serve_page_firefox.py in Firefox)
share: the prompt they type and the check of what the page streamed against the API."""
import json
import urllib.request

PROMPT = "a lighthouse on a cliff, stormy sea, dramatic light"


def check_streamed(base, key, adapter, shown, status):
    """1 if the page ended with status "done" showing exactly what POST /v1/negatives answers for the
    page's request (temperature 0.8, max_tokens 128, the server's default seed); prints the verdict."""
    req = urllib.request.Request(base + "/v1/negatives", headers={"Authorization": "Bearer " + key},
                                 data=json.dumps({"prompts": [PROMPT], "model": adapter, "temperature": 0.8,
                                                  "max_tokens": 128}).encode())
    expected = json.load(urllib.request.urlopen(req))["negatives"][0]
    # the page's text node shows the text as the browser renders it: compare without surrounding space
    ok = status.strip() == "done" and shown.strip() == expected.strip() and len(shown) > 0
    print(("ok   " if ok else "FAIL ") + f"page streamed {shown!r} (status {status!r}); the API: {expected!r}")
    return ok
