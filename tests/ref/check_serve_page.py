"""The web page of `autoneg serve` in headless Chromium (selenium; tests/ref/check_serve.sh runs it).

    python check_serve_page.py BASE_URL API_KEY ADAPTER_ID SCREENSHOT.png

Types the API key and a prompt, picks the adapter, presses the button, waits for the streamed negative
to end, and checks the page shows exactly what POST /v1/negatives answers for the same request (the
page sends temperature 0.8 and max_tokens 128 with the server's default seed), then saves a
screenshot."""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from serve_page_common import PROMPT, check_streamed

base, key, adapter, shot = sys.argv[1:5]
prompt = PROMPT

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
    failed += not check_streamed(base, key, adapter, shown, status)
    driver.find_element(By.ID, "copy").click()
    ok = "copied" in driver.find_element(By.ID, "status").text
    print(("ok   " if ok else "FAIL ") + "copy button")
    failed += not ok
    print("screenshot:", shot)
finally:
    driver.quit()
print(f"check_serve_page: {failed} failed")
sys.exit(1 if failed else 0)
