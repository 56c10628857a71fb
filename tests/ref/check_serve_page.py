"""The web page of `autoneg serve` in headless Chromium (selenium; tests/ref/check_serve.sh runs it).

    python check_serve_page.py BASE_URL API_KEY ADAPTER_ID SCREENSHOT.png

Types the API key and a prompt, picks the adapter, presses the button, waits for the streamed negative
to end, and checks the page shows exactly what POST /v1/negatives answers for the same request (the
page sends temperature 0.8 and max_tokens 128 with the server's default seed), then saves a
screenshot."""
import json
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

base, key, adapter, shot = sys.argv[1:5]
prompt = "a lighthouse on a cliff, stormy sea, dramatic light"

opts = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,800"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
failed = 0
try:
    driver.get(base + "/")
    driver.find_element(By.TAG_NAME, "details").click()
    key_box = driver.find_element(By.ID, "key")
    key_box.send_keys(key)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key_box)
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) >= 2)
    Select(driver.find_element(By.ID, "model")).select_by_value(adapter)
    driver.find_element(By.ID, "prompt").send_keys(prompt)
    driver.find_element(By.ID, "go").click()
    WebDriverWait(driver, 60).until(lambda d: "done" in d.find_element(By.ID, "status").text or
                                    "error" in d.find_element(By.ID, "status").text)
    shown = driver.find_element(By.ID, "out").text
    status = driver.find_element(By.ID, "status").text
    driver.save_screenshot(shot)
    req = urllib.request.Request(base + "/v1/negatives", headers={"Authorization": "Bearer " + key},
                                 data=json.dumps({"prompts": [prompt], "model": adapter, "temperature": 0.8,
                                                  "max_tokens": 128}).encode())
    expected = json.load(urllib.request.urlopen(req))["negatives"][0]
    # the page's text node shows the text as the browser renders it: compare without surrounding space
    ok = status.strip() == "done" and shown.strip() == expected.strip() and len(shown) > 0
    print(("ok   " if ok else "FAIL ") + f"page streamed {shown!r} (status {status!r}); the API: {expected!r}")
    failed += not ok
    driver.find_element(By.ID, "copy").click()
    ok = "copied" in driver.find_element(By.ID, "status").text
    print(("ok   " if ok else "FAIL ") + "copy button")
    failed += not ok
    print("screenshot:", shot)
finally:
    driver.quit()
print(f"check_serve_page: {failed} failed")
sys.exit(1 if failed else 0)
