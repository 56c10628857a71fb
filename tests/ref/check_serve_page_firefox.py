"""The web page of `autoneg serve` in headless Firefox (tests/ref/check_serve.sh runs it when
firefox-esr is installed). Firefox is driven through its own Marionette protocol with Mozilla's
marionette-driver from PyPI, since geckodriver (what selenium needs for Firefox) is neither a Debian
package nor on PyPI.

    python check_serve_page_firefox.py BASE_URL API_KEY ADAPTER_ID SCREENSHOT.png

The same steps and checks as check_serve_page.py (Chromium): type the API key and a prompt, pick the
adapter, press the button, wait for the streamed negative to end, compare it with what POST
/v1/negatives answers for the same request, press copy, save a screenshot."""
import base64
import os
import shutil
import sys
import tempfile
import time

from marionette_driver.by import By
from marionette_driver.marionette import Marionette
from serve_page_common import PROMPT, check_streamed

base, key, adapter, shot = sys.argv[1:5]
prompt = PROMPT
binary = shutil.which("firefox-esr") or shutil.which("firefox")
if not binary:
    sys.exit("check_serve_page_firefox: no firefox-esr (apt-get install firefox-esr)")
os.environ["MOZ_HEADLESS"] = "1"
profile = tempfile.mkdtemp(prefix="autoneg-firefox-")
# gecko_log: Firefox's own log goes with the profile, not into the working folder
client = Marionette(bin=binary, headless=True, profile=profile, startup_timeout=120,
                    gecko_log=os.path.join(profile, "gecko.log"))
failed = 0


def wait(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


try:
    client.start_session()
    print("firefox", client.session_capabilities.get("browserVersion"))
    client.navigate(base + "/")
    client.find_element(By.TAG_NAME, "details").click()
    key_box = client.find_element(By.ID, "key")
    key_box.send_keys(key)
    client.execute_script("arguments[0].dispatchEvent(new Event('change'))", script_args=[key_box])
    wait(lambda: len(client.find_elements(By.CSS_SELECTOR, "#model option")) >= 2, 20)
    client.execute_script("var s = document.getElementById('model'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('change'))", script_args=[adapter])
    client.find_element(By.ID, "prompt").send_keys(prompt)
    client.find_element(By.ID, "go").click()
    status = lambda: client.find_element(By.ID, "status").text
    wait(lambda: "done" in status() or "error" in status(), 60)
    shown = client.find_element(By.ID, "out").text
    st = status()
    with open(shot, "wb") as f:
        f.write(base64.b64decode(client.screenshot()))
    failed += not check_streamed(base, key, adapter, shown, st)
    client.find_element(By.ID, "copy").click()
    wait(lambda: "copied" in status() or "copy" in status(), 5)
    ok = "copied" in status()
    print(("ok   " if ok else "FAIL ") + f"copy button (status {status()!r})")
    failed += not ok
    print("screenshot:", shot)
finally:
    try:
        client.delete_session()
    except Exception:
        pass
    client.cleanup()
    shutil.rmtree(profile, ignore_errors=True)
print(f"check_serve_page_firefox: {failed} failed")
sys.stdout.flush()
# mozprofile's objects clean their folders in __del__, which fails noisily at interpreter shutdown:
# everything is cleaned above, so leave without running the finalizers
os._exit(1 if failed else 0)
