#!/usr/bin/env python3
"""Drives qwen3-tts-server's page (/) in a real headless Chromium through Playwright, as a person would:
controls are found by their accessible names. Used by server/tests/web_ui.rs, which starts the servers and
checks what this script reports (one JSON object on stdout) and the files it saves.

    web_ui.py --chromium /usr/bin/chromium --mic-wav WAV --ref-wav WAV --out DIR \\
        --custom URL --base URL --api-key KEY [--design URL] [--instruct URL]   # the test scenarios
    web_ui.py ... --base URL --api-key KEY --measure VOICE    # click-to-first-audio, 5 times (a stored voice)
    web_ui.py ... --base URL --screenshots DIR --voice V     # docs/ui-speak.png, docs/ui-clone.png

Scenarios: speak a sentence (seed 7, WAV) and save the download; a VoiceDesign description and a 1.7B
CustomVoice speaker with instructions, spoken and saved likewise; Ctrl+Enter speaks; an API error (speed out
of range) is shown next to "Speed"; Stop during a long text cancels; the API-key prompt (a wrong key, then
the right one); clone from a file with a transcript (ICL) and from the fake microphone (x-vector), each
appears under "Voice" and speaks; delete a stored voice.
"""
import argparse
import json
import re
import sys
import time

from playwright.sync_api import expect, sync_playwright

TIMEOUT_MS = 60_000
LONG_TEXT = " ".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog, and then it runs far away into the woods."
    for i in range(1, 40))


def flags(mic_wav):
    return ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_wav}"]


def label(page, name):
    """The control labelled exactly `name` (its accessible name)."""
    return page.get_by_label(name, exact=True)


def button(page, name):
    """The button named exactly `name`."""
    return page.get_by_role("button", name=name, exact=True)


def wait_done(page):
    expect(page.locator("#progress-text")).to_contain_text("Done", timeout=TIMEOUT_MS)


def first_audio_ms(page):
    text = page.locator("#stat-first").inner_text()
    m = re.match(r"([\d.]+) (ms|s)", text)
    assert m, f"first audio shown as {text!r}"
    return float(m.group(1)) * (1000 if m.group(2) == "s" else 1)


def download(page, path):
    link = page.get_by_role("link", name=re.compile("^Download"))
    expect(link).not_to_have_attribute("aria-disabled", "true", timeout=TIMEOUT_MS)
    with page.expect_download() as d:
        link.click()
    d.value.save_as(path)
    return path


def open_page(browser, url, model_id_part):
    """A new tab on the page at `url`, once it shows a model whose id contains `model_id_part`."""
    page = browser.new_page()
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text(model_id_part, timeout=TIMEOUT_MS)
    return page


def speak(page, text, seed=None, fmt="wav"):
    label(page, "Text").fill(text)
    label(page, "Seed").fill("" if seed is None else str(seed))
    label(page, "Format").select_option(fmt)
    button(page, "Speak").click()
    wait_done(page)


def scenarios(browser, a, out):
    report = {}
    # --- CustomVoice server: speaking, keyboard, errors, stop
    page = open_page(browser, a.custom, "customvoice")
    label(page, "Voice").select_option("ryan")
    label(page, "Language").select_option("english")
    speak(page, "Hello from the browser.", seed=7)
    report["speak"] = {
        "first_audio_ms": first_audio_ms(page),
        "frames": int(page.locator("#stat-frames").inner_text()),
        "seed": page.locator("#stat-seed").inner_text(),
        "rtf": page.locator("#stat-rtf").inner_text(),
        "wav": download(page, f"{out}/speak.wav"),
        "waveform_drawn": page.evaluate(
            "() => { const c = document.getElementById('waveform');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"),
    }
    # Ctrl+Enter speaks (another seed: the figures change).
    label(page, "Seed").fill("8")
    label(page, "Text").press("Control+Enter")
    expect(page.locator("#stat-seed")).to_have_text("8", timeout=TIMEOUT_MS)
    wait_done(page)
    report["keyboard"] = {"seed": page.locator("#stat-seed").inner_text()}
    # An error of the API, shown next to the control it names.
    label(page, "Speed").fill("9")
    button(page, "Speak").click()
    err = page.locator("#speed-error")
    expect(err).to_be_visible(timeout=TIMEOUT_MS)
    report["api_error"] = {"text": err.inner_text(),
                           "invalid": label(page, "Speed").get_attribute("aria-invalid")}
    label(page, "Speed").fill("1")
    # Stop during a long text.
    label(page, "Text").fill(LONG_TEXT)
    label(page, "Seed").fill("")
    label(page, "Format").select_option("pcm")
    button(page, "Speak").click()
    expect(page.locator("#stat-first")).not_to_have_text("–", timeout=TIMEOUT_MS)
    parts_text = page.locator("#progress-text").inner_text()
    button(page, "Stop").click()
    expect(page.locator("#progress-text")).to_contain_text("Stopped", timeout=TIMEOUT_MS)
    report["stop"] = {"progress_before": parts_text, "after": page.locator("#progress-text").inner_text(),
                      "speak_enabled": button(page, "Speak").is_enabled()}
    page.close()

    # --- VoiceDesign server: the voice is a description ("Voice" is a text area; no "Instructions")
    if a.design:
        page = open_page(browser, a.design, "voicedesign")
        label(page, "Voice").fill("A calm, low voice, speaking slowly.")
        speak(page, "A designed voice.", seed=5)
        report["design"] = {
            "voice_control": label(page, "Voice").evaluate("e => e.tagName"),
            "instructions_shown": label(page, "Instructions").is_visible(),
            "wav": download(page, f"{out}/design.wav"),
        }
        page.close()

    # --- 1.7B CustomVoice: a preset speaker with "Instructions"
    if a.instruct:
        page = open_page(browser, a.instruct, "1.7b-customvoice")
        label(page, "Voice").select_option("vivian")
        label(page, "Instructions").fill("Speak cheerfully.")
        speak(page, "With instructions.", seed=6)
        report["instruct"] = {"wav": download(page, f"{out}/instruct.wav")}
        page.close()

    # --- Base server with an API key: the prompt, cloning, stored voices
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(a.base)
    key = label(page, "API key")
    expect(key).to_be_visible(timeout=TIMEOUT_MS)
    prompt = page.locator("#auth-error").inner_text()
    key.fill("not-the-key")
    button(page, "Save key").click()
    expect(page.locator("#auth-error")).to_contain_text("not accepted", timeout=TIMEOUT_MS)
    wrong = page.locator("#auth-error").inner_text()
    label(page, "API key").fill(a.api_key)
    button(page, "Save key").click()
    expect(page.locator("#model-info")).to_contain_text("base", timeout=TIMEOUT_MS)
    report["auth"] = {"prompt": prompt, "wrong_key": wrong, "prompt_hidden": not key.is_visible()}

    # Clone from a file, with a transcript (ICL).
    label(page, "Audio file").set_input_files(a.ref_wav)
    label(page, "Transcript").fill("Okay. Yeah. I resent you. I love you.")
    label(page, "Name").fill("from-file")
    button(page, "Clone").click()
    expect(label(page, "Voice")).to_have_value("from-file", timeout=TIMEOUT_MS)
    options = label(page, "Voice").locator("option").all_inner_texts()
    label(page, "Language").select_option("english")
    speak(page, "A voice cloned from a file.", seed=11)
    report["clone_file"] = {"options": options, "wav": download(page, f"{out}/clone-file.wav")}

    # Clone from the (fake) microphone, no transcript (x-vector).
    button(page, "Record").click()
    expect(page.locator("#record-status")).to_contain_text("Recording", timeout=TIMEOUT_MS)
    page.wait_for_timeout(2500)
    button(page, "Stop recording").click()
    expect(page.locator("#record-status")).to_contain_text("Recorded", timeout=TIMEOUT_MS)
    recorded = page.locator("#record-status").inner_text()
    label(page, "Transcript").fill("")
    label(page, "Name").fill("from-mic")
    button(page, "Clone").click()
    expect(label(page, "Voice")).to_have_value("from-mic", timeout=TIMEOUT_MS)
    options = label(page, "Voice").locator("option").all_inner_texts()
    speak(page, "A voice cloned from the microphone.", seed=12)
    report["clone_mic"] = {"recorded": recorded, "options": options,
                           "wav": download(page, f"{out}/clone-mic.wav")}

    # The key is remembered; stored voices listed and deleted.
    page.reload()
    expect(page.locator("#model-info")).to_contain_text("base", timeout=TIMEOUT_MS)
    listed = page.locator("#voice-list li").all_inner_texts()
    button(page, "Delete from-mic").click()
    expect(button(page, "Delete from-mic")).to_have_count(0, timeout=TIMEOUT_MS)
    report["stored"] = {
        "listed": listed,
        "after_delete": label(page, "Voice").locator("option").all_inner_texts(),
        "key_prompt_after_reload": label(page, "API key").is_visible(),
    }
    ctx.close()
    return report


def measure(browser, a, voice, language, runs=5):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(a.base)
    if a.api_key:
        page.evaluate("k => localStorage.setItem('qwen3-tts-api-key', k)", a.api_key)
        page.reload()
    expect(label(page, "Voice")).to_contain_text(voice, timeout=TIMEOUT_MS)
    label(page, "Voice").select_option(voice)
    label(page, "Language").select_option(language)
    label(page, "Format").select_option("pcm")
    times = []
    for i in range(runs):
        label(page, "Text").fill(f"Take {i + 1}: hello there, this is the page speaking.")
        button(page, "Speak").click()
        # No polling while the first audio is on its way: on a small machine the driver's DOM polling
        # takes CPU from the server it measures.
        time.sleep(1.5)
        times.append(first_audio_ms(page))
        wait_done(page)
    return {"voice": voice, "language": language, "first_audio_ms": times}


def screenshots(browser, a, out):
    page = browser.new_page(viewport={"width": 1000, "height": 1100})
    page.goto(a.base)
    if a.api_key:
        page.evaluate("k => localStorage.setItem('qwen3-tts-api-key', k)", a.api_key)
        page.reload()
    expect(page.locator("#model-info")).to_contain_text("base", timeout=TIMEOUT_MS)
    # Speaking with a stored (warm) voice, then cloning another.
    expect(label(page, "Voice")).to_contain_text(a.voice, timeout=TIMEOUT_MS)
    label(page, "Voice").select_option(a.voice)
    speak(page, "Hello.", seed=2)  # the first request of a fresh server builds its graphs
    speak(page, "Hello! This is Qwen3-TTS, speaking from your own machine.", seed=3)
    page.screenshot(path=f"{out}/ui-speak.png", full_page=False)
    label(page, "Audio file").set_input_files(a.ref_wav)
    label(page, "Transcript").fill("Okay. Yeah. I resent you. I love you.")
    label(page, "Name").fill("ryan-clone")
    button(page, "Clone").click()
    expect(label(page, "Voice")).to_have_value("ryan-clone", timeout=TIMEOUT_MS)
    page.locator("#clone-section").screenshot(path=f"{out}/ui-clone.png")
    return {"screenshots": [f"{out}/ui-speak.png", f"{out}/ui-clone.png"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--custom")
    ap.add_argument("--base")
    ap.add_argument("--design")
    ap.add_argument("--instruct")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--mic-wav", required=True)
    ap.add_argument("--ref-wav", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--measure")
    ap.add_argument("--language", default="auto")
    ap.add_argument("--voice", default="narrator", help="the stored voice of --screenshots")
    ap.add_argument("--screenshots")
    a = ap.parse_args()
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, headless=True, args=flags(a.mic_wav))
        try:
            if a.measure:
                report = measure(browser, a, a.measure, a.language)
            elif a.screenshots:
                report = screenshots(browser, a, a.screenshots)
            else:
                report = scenarios(browser, a, a.out)
            report["browser"] = browser.version
        finally:
            browser.close()
    report["seconds"] = round(time.time() - t0, 1)
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
