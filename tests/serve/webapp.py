"""The web app in a real browser: Debian's Chromium, headless, driven by Selenium.

Run by tests/integration/webapp.rs with the interpreter of .venv-clients/ and one
argument: a JSON file with the server's URL, the model names, the greedy reply that
`runanywhere run` gave for the same chat, the Hub reference to pull, and the folder for
screenshots. It uses the page as a person would (typing, clicking, keys) and exits
non-zero, naming the failing check, on the first mismatch.
"""

import json
import re
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait


def check(condition, what, *details):
    if not condition:
        raise AssertionError(what + "".join(f"\n  {d!r}" for d in details))
    print(f"ok: {what}", flush=True)


def metrics(url):
    with urllib.request.urlopen(f"{url}/metrics") as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


class Page:
    def __init__(self, url, shots):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions"]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        self.url = url
        self.shots = shots

    def wait(self, what, condition, timeout=60):
        try:
            # The page redraws a conversation whole: an element found a moment ago can
            # be gone by the next look, so a stale one just means "look again".
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: condition())
        except TimeoutException:
            self.shot("failed")
            raise AssertionError(f"timed out waiting for: {what}")

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def tab(self, name):
        self.find(f"#tab-{name}").click()
        self.wait(f"the {name} tab", lambda: self.find(f"#view-{name}").is_displayed())

    def shot(self, name):
        path = f"{self.shots}/{name}.png"
        self.driver.save_screenshot(path)
        print(f"screenshot: {path}", flush=True)

    def replies(self):
        return self.all("#messages .msg.assistant")

    def send(self, text):
        box = self.find("#prompt")
        box.clear()
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def stored_reply(self):
        """The last assistant message as the page saved it (raw text, not rendered)."""
        return self.js("""
            const all = JSON.parse(localStorage.getItem('runanywhere.conversations'));
            const id = localStorage.getItem('runanywhere.currentConversation');
            const c = all.find((x) => x.id === id);
            return c.messages[c.messages.length - 1];""")

    def wait_reply_done(self, count):
        self.wait(f"reply {count} to finish", lambda: len(self.replies()) >= count
                  and "pending" not in self.replies()[count - 1].get_attribute("class"), timeout=120)
        return self.replies()[count - 1]


def figures(reply):
    return {f.get_attribute("data-fig"): f.text for f in reply.find_elements(By.CSS_SELECTOR, ".fig")}


def main():
    spec = json.load(open(sys.argv[1]))
    url = spec["url"]
    page = Page(url, spec["screenshots"])
    try:
        run(page, spec)
    finally:
        logs = page.driver.get_log("browser")
        for entry in logs:
            print(f"browser console: {entry['level']} {entry['message']}", flush=True)
        page.driver.quit()
    refused = [e for e in logs if "Content Security Policy" in e["message"]]
    check(not refused, "the page's own scripts and styles pass its Content-Security-Policy", refused)


def run(page, spec):
    url = spec["url"]
    page.driver.get(url + "/")
    page.wait("the app to start", lambda: page.js("return document.body.dataset.ready") == "true")
    check(page.driver.title == "RunAnywhere", "the page is served at /")

    # Settings: greedy, short replies; kept in the browser.
    page.tab("settings")
    check(page.find("#settings-form [name=temperature]").get_attribute("placeholder") == "0.8",
          "the server's default temperature is the placeholder")
    for name, value in [("temperature", "0"), ("max_tokens", str(spec["chat"]["max_tokens"]))]:
        field = page.find(f"#settings-form [name={name}]")
        field.clear()
        field.send_keys(value)
    saved = json.loads(page.js("return localStorage.getItem('runanywhere.settings')"))
    check(saved == {"temperature": "0", "max_tokens": str(spec["chat"]["max_tokens"])},
          "settings are saved in the browser", saved)
    page.shot("settings-desktop")

    # Chat: the streamed greedy reply equals `runanywhere run`'s, with its figures.
    page.tab("chat")
    Select(page.find("#model-select")).select_by_value(spec["model"])
    page.send("Once upon a time")
    reply = page.wait_reply_done(1)
    stored = page.stored_reply()
    check(stored["content"] == spec["chat"]["text"], "the streamed reply is run's greedy text",
          stored["content"], spec["chat"]["text"])
    shown = " ".join(reply.find_element(By.CSS_SELECTOR, ".bubble").text.split())
    check(shown == " ".join(spec["chat"]["text"].split()), "the bubble shows that text", shown)
    f = figures(reply)
    check(re.fullmatch(r"TTFT \d+ ms", f["ttft"]) is not None, "the time to first token is shown", f)
    check(re.fullmatch(r"\d+\.\d tok/s", f["speed"]) is not None, "the decode speed is shown", f)
    check(f["tokens"] == f"{spec['chat']['completion_tokens']} tokens", "the token count is run's", f)
    check(f["engine"] == "llama-cpp" and f["stop"] == spec["chat"]["finish_reason"],
          "the engine and stop reason are shown", f)
    page.shot("chat-desktop")

    # Regenerate gives the same greedy reply; edit-and-resend replaces the turn.
    reply.find_element(By.CSS_SELECTOR, ".regenerate").click()
    page.wait("the regenerated reply", lambda: "pending" not in page.replies()[0].get_attribute("class")
              and page.stored_reply().get("figures") is not None, timeout=60)
    check(page.stored_reply()["content"] == spec["chat"]["text"], "regenerate gives the same greedy text")
    page.find("#messages .msg.user .edit").click()
    check(page.find("#prompt").get_attribute("value") == "Once upon a time", "edit puts the message back")
    check(page.find("#editing-banner").is_displayed(), "editing is shown")
    page.send("The cat")
    page.wait_reply_done(1)
    users = [m.text for m in page.all("#messages .msg.user .bubble")]
    check(users == ["The cat"] and len(page.replies()) == 1, "the edited turn replaced the old one", users)

    # Stop during a long reply (the mock engine at 25 ms a token): no more tokens arrive,
    # and the server's counters agree with what the page shows.
    field_max = None
    page.tab("settings")
    field_max = page.find("#settings-form [name=max_tokens]")
    field_max.clear()
    field_max.send_keys("400")
    page.tab("chat")
    page.find("#new-chat").click()
    Select(page.find("#model-select")).select_by_value(spec["slow_model"])
    before = metrics(url)
    page.send("hello")
    page.wait("tokens of the slow reply", lambda: len(page.replies()) == 1
              and len(page.replies()[0].find_element(By.CSS_SELECTOR, ".bubble").text) > 20)
    check(page.find("#stop").is_displayed(), "Stop is shown while a reply streams")
    page.find("#stop").click()
    reply = page.wait_reply_done(1)
    text = page.stored_reply()["content"]
    time.sleep(1.0)
    check(page.stored_reply()["content"] == text, "no token arrives after Stop")
    f = figures(reply)
    check(f["stop"] == "stopped", "the reply says it was stopped", f)
    page.wait("the server to end the generation",
              lambda: metrics(url)["runanywhere_generations_in_flight"] == 0, timeout=10)
    after = metrics(url)
    generated = after["runanywhere_generated_tokens_total"] - before["runanywhere_generated_tokens_total"]
    shown = int(f["tokens"].split()[0])
    check(shown <= generated <= shown + 2 and generated < 400,
          "the server generated what the page shows (cancelled within a token or two)", shown, generated)
    time.sleep(0.5)
    check(metrics(url)["runanywhere_generated_tokens_total"] == after["runanywhere_generated_tokens_total"],
          "the server generates nothing more")

    # Esc stops too.
    page.find("#new-chat").click()
    page.send("hello")
    page.wait("the slow reply to start", lambda: len(page.replies()) == 1
              and len(page.replies()[0].find_element(By.CSS_SELECTOR, ".bubble").text) > 5)
    page.find("#prompt").send_keys(Keys.ESCAPE)
    check(figures(page.wait_reply_done(1))["stop"] == "stopped", "Esc stops the reply")

    # A reply made of markup shows as text: no element is created, no script runs.
    page.find("#new-chat").click()
    Select(page.find("#model-select")).select_by_value(spec["html_model"])
    page.send("hi")
    reply = page.wait_reply_done(1)
    bubble = reply.find_element(By.CSS_SELECTOR, ".bubble")
    check(page.stored_reply()["content"] == spec["html_reply"], "the markup reply arrived whole")
    check("<img src=x onerror=" in bubble.text and "<script>" in bubble.text,
          "the markup is shown as text", bubble.text)
    check(page.js("return document.querySelectorAll('#messages img, #messages script').length") == 0,
          "no element was made from the reply")
    check(page.js("return document.body.dataset.pwned === undefined"), "no script of the reply ran")
    check([e.text for e in bubble.find_elements(By.CSS_SELECTOR, "strong")] == ["bold"]
          and [e.text for e in bubble.find_elements(By.CSS_SELECTOR, "code")] == ["<b>code</b>"],
          "the Markdown subset is rendered (bold, code) with the code's markup as text")
    page.shot("chat-markup")

    # Models: the loaded list, Unload, a pull with a live bar to 100%, verify, delete.
    page.tab("models")
    page.wait("the loaded models", lambda: any(r.get_attribute("data-model") == spec["model"]
                                                for r in page.all("#loaded tr[data-model]")))
    page.shot("models-desktop")
    row = [r for r in page.all("#loaded tr[data-model]") if r.get_attribute("data-model") == spec["model"]][0]
    row.find_element(By.CSS_SELECTOR, ".unload").click()
    page.wait("the model to unload", lambda: not any(
        r.get_attribute("data-model") == spec["model"] for r in page.all("#loaded tr[data-model]")))
    ps = json.loads(urllib.request.urlopen(f"{url}/api/ps").read())
    check(all(m["name"] != spec["model"] for m in ps["models"]), "the server unloaded it", ps)

    # Cancel a pull part-way: the store has no model; the partial file is kept.
    page.find("#pull-ref").send_keys(spec["pull"]["reference"])
    page.find("#pull-ref").send_keys(Keys.ENTER)
    page.wait("the pull to be under way", lambda: int(page.find(".pull progress").get_attribute("data-percent") or 0) >= 10)
    page.find(".pull .cancel").click()
    page.wait("the pull to be cancelled", lambda: "failed" in page.find(".pull").get_attribute("class"))
    check("cancelled" in page.find(".pull .status").text, "the card says cancelled", page.find(".pull").text)
    time.sleep(0.5)
    tags = json.loads(urllib.request.urlopen(f"{url}/api/tags").read())
    check(all(m["name"] != spec["pull"]["id"] for m in tags["models"]), "a cancelled pull installs nothing", tags)

    # Pull again: it resumes, and the bar reaches 100%.
    page.find("#pull-ref").send_keys(spec["pull"]["reference"])
    page.find("#pull-ref").send_keys(Keys.ENTER)
    seen = set()

    def second_pull_ended():
        cards = page.all(".pull")
        if len(cards) < 2:
            return False
        seen.add(cards[0].find_element(By.CSS_SELECTOR, "progress").get_attribute("data-percent"))
        return "done" in cards[0].get_attribute("class") or "failed" in cards[0].get_attribute("class")
    page.wait("the second pull to end", second_pull_ended, timeout=120)
    card = page.find(".pull")
    check("done" in card.get_attribute("class"), "the pull succeeded", card.text)
    bar = card.find_element(By.CSS_SELECTOR, "progress")
    check(bar.get_attribute("data-percent") == "100" and bar.get_attribute("value") == bar.get_attribute("max"),
          "the bar reached 100%", bar.get_attribute("value"), bar.get_attribute("max"))
    check(re.search(r"\d+(\.\d)? (B|KiB|MiB) / \d+(\.\d)? (KiB|MiB)", card.text) is not None,
          "bytes are shown", card.text)
    check(len(seen - {None, "100"}) >= 1, "the bar moved through intermediate values", seen)
    pulled = spec["pull"]["id"]
    page.wait("the pulled model in the store", lambda: page.all(f"#store tr[data-model='{pulled}']"))
    page.find(f"#store tr[data-model='{pulled}'] .verify").click()
    page.wait("the verification", lambda: "✓" in page.find(f"#store tr[data-model='{pulled}'] .verify-result").text)
    page.shot("models-pulled")
    page.find(f"#store tr[data-model='{pulled}'] .delete").click()
    page.driver.switch_to.alert.accept()
    page.wait("the model to be deleted", lambda: not page.all(f"#store tr[data-model='{pulled}']"))
    tags = json.loads(urllib.request.urlopen(f"{url}/api/tags").read())
    check(all(m["name"] != pulled for m in tags["models"]), "the store no longer has it", tags)

    # Engines: each available engine, with formats and capabilities.
    page.tab("engines")
    page.wait("the engines", lambda: page.all("#engines .card"))
    ids = sorted(c.get_attribute("data-engine") for c in page.all("#engines .card"))
    check(set(spec["engines"]) <= set(ids), "every engine is listed", ids)
    page.shot("engines-desktop")

    # Benchmark over two engines: one bar per engine in the chart, and the table.
    page.tab("bench")
    page.wait("the benchmark form", lambda: page.all("#bench-engines input"))
    Select(page.find("#bench-model")).select_by_value(spec["model"])
    for engine in spec["bench_engines"]:
        page.find(f"#bench-engines input[value='{engine}']").click()
    for field, value in [("#bench-runs", "1"), ("#bench-max-tokens", "16")]:
        page.find(field).clear()
        page.find(field).send_keys(value)
    page.find("#bench-run").click()
    page.wait("the benchmark to finish", lambda: page.all("#bench-progress li.done"), timeout=180)
    bars = page.all("#chart-decode svg.chart rect.bar")
    check(sorted(b.get_attribute("data-engine") for b in bars) == sorted(spec["bench_engines"]),
          "the decode chart has one bar per engine", [b.get_attribute("data-engine") for b in bars])
    check(len(page.all("#chart-prefill svg.chart rect.bar")) == len(spec["bench_engines"]),
          "so does the prefill chart")
    check(len(page.all("#bench-table tbody tr")) == len(spec["bench_engines"]), "the table has a row per engine")
    page.shot("bench-desktop")

    # Phone width: every tab still fits.
    page.driver.set_window_size(390, 844)
    for name in ["chat", "models", "engines", "bench", "settings"]:
        page.tab(name)
        width = page.js("return document.documentElement.scrollWidth")
        check(width <= 400, f"the {name} tab fits a phone-width window", width)
        page.shot(f"{name}-phone")


if __name__ == "__main__":
    main()
