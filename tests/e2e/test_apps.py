"""The three Voila apps in a real browser: BokehJS draws, no widget or page errors, sliders reach the
impaired NAP, audio rows hold playable WAV, and the lab's fine-tune starts, progresses and cancels.

Load times under test load (page request -> first Bokeh canvas) are written to
artifacts/app_load_times.json for reading; the load-time target is measured by bench/bench_apps.py.
"""
import json
import re
import time

import pytest
from conftest import ARTIFACTS
from voila_server import kernel_counts, leave, wait_for_kernels_shut_down

from dal_widgets.loop import checkpoint, pretrained

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

LOAD_TIMEOUT_MS = 90_000  # kernel start + notebook execution on a cold, busy 2-core machine
SHUTDOWN_TIMEOUT_S = 30  # Voila asks a kernel to stop, then kills it after a grace period
UPDATE_TIMEOUT_MS = 30_000  # one kernel round trip plus background CARFAC work
FIRST_STEP_TIMEOUT_MS = 180_000  # the first fine-tune step includes compiling the training step
I_4K = 5  # index of the 4 kHz slider (FREQS_HZ = 250, 500, 1k, 2k, 3k, 4k, 6k, 8k)
LOAD_TIMES = {}

# Sum of the image shown by the Bokeh figure whose title starts with `prefix` (null: no image yet).
IMAGE_SUM_JS = """(prefix) => {
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const title = model.title && model.title.text;
      if (typeof title !== "string" || !title.startsWith(prefix) || !model.renderers) continue;
      for (const renderer of model.renderers) {
        const data = renderer.data_source && renderer.data_source.data;
        const images = data && (data instanceof Map ? data.get("image") : data["image"]);
        if (!images) continue;
        if (!images.length) return null;
        let sum = 0;
        for (const v of images[0]) sum += v;
        return sum;
      }
    }
  }
  return null;
}"""

# Thresholds drawn on the audiogram plot (the source with a threshold_db_hl column that has points).
AUDIOGRAM_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data) continue;
      const th = data instanceof Map ? data.get("threshold_db_hl") : data["threshold_db_hl"];
      if (th && th.length) return Array.from(th);
    }
  }
  return null;
}"""

# Every visible <audio>: its bytes (fetched from its src), their first 4 characters, its duration.
AUDIO_JS = """async () => {
  const out = [];
  for (const el of document.querySelectorAll("audio")) {
    if (getComputedStyle(el).visibility === "hidden" || !el.src) continue;
    const buffer = await (await fetch(el.src)).arrayBuffer();
    await new Promise((done) => {
      if (el.readyState >= 1) return done();
      el.addEventListener("loadedmetadata", done, {once: true});
      el.load();
      setTimeout(done, 5000);
    });
    out.push({bytes: buffer.byteLength, duration: el.duration,
              head: String.fromCharCode(...new Uint8Array(buffer.slice(0, 4)))});
  }
  return out;
}"""

DOWNLOAD_LENGTHS_JS = """() => Array.from(
  document.querySelectorAll('a[download][href^="data:audio/wav;base64,"]'),
  (a) => a.href.length - "data:audio/wav;base64,".length)"""


def _open(page, voila_url, kind):
  start = time.monotonic()
  page.goto(f"{voila_url}/voila/render/{kind}.ipynb", timeout=LOAD_TIMEOUT_MS)
  page.locator(".dal-app canvas").first.wait_for(timeout=LOAD_TIMEOUT_MS)
  LOAD_TIMES[kind] = round(time.monotonic() - start, 1)
  ARTIFACTS.mkdir(exist_ok=True)
  (ARTIFACTS / "app_load_times.json").write_text(json.dumps(LOAD_TIMES, indent=1))


def _wait_for_image(page, prefix, timeout=UPDATE_TIMEOUT_MS):
  page.wait_for_function(f"(p) => ({IMAGE_SUM_JS})(p) !== null", arg=prefix, timeout=timeout)
  return page.evaluate(IMAGE_SUM_JS, prefix)


def _assert_playable_audio(page, n_rows):
  rows = page.evaluate(AUDIO_JS)
  assert len(rows) == n_rows
  for row in rows:
    assert row["head"] == "RIFF" and row["bytes"] > 1000 and row["duration"] > 0.5
  downloads = page.evaluate(DOWNLOAD_LENGTHS_JS)
  assert len(downloads) == n_rows and min(downloads) > 1000


# Locations of the Bokeh Spans of the page (the NAP time cursors).
SPAN_LOCATIONS_JS = """() => {
  const out = [];
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      if (model.type === "Span" || model.constructor.name === "Span") out.push(model.location);
    }
  }
  return out;
}"""


def _wait_for_new_time(page, old):
  """Waits until the SAI time label shows something else than `old`."""
  page.wait_for_function("(old) => Array.from(document.querySelectorAll('.widget-label'))"
                         ".some(e => /^t = /.test(e.innerText) && e.innerText !== old)",
                         arg=old, timeout=UPDATE_TIMEOUT_MS)


# Shown parts of the app that reach past its right edge (the app's column clips them, so a
# colour bar or toolbar there is cut off, not scrolled to).
PAST_THE_APP_JS = """() => {
  const right = document.querySelector('.dal-app').getBoundingClientRect().right;
  return Array.from(document.querySelectorAll('.dal-app *'), (e) => [e, e.getBoundingClientRect()])
    .filter(([e, box]) => e.offsetParent !== null && box.width > 0 && box.right > right + 1)
    .map(([e, box]) => `${e.tagName}.${String(e.className).slice(0, 40)} ends at ${box.right}`);
}"""

# Shown buttons, labels, readouts and choices whose own text is cut (an ellipsis or clipped).
TRUNCATED_JS = """() => Array.from(document.querySelectorAll(
    '.dal-app button, .dal-app label, .dal-app .widget-label, .dal-app .widget-readout, '
    + '.dal-app select'))
  .filter((e) => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
  .map((e) => e.innerText)"""


def _assert_fits(page):
  """Nothing cut off at the right of the app, no label cut short."""
  assert page.evaluate(PAST_THE_APP_JS) == []
  assert page.evaluate(TRUNCATED_JS) == []


def _assert_no_errors(page):
  assert page.locator(".jupyter-widgets-error-widget").count() == 0
  assert page.get_by_text("javascript error", exact=False).count() == 0
  assert page.locator(".dal-error").count() == 0  # the busy indicator's error text
  assert page.errors == []
  assert page.console_errors == []  # e.g. an audio row's failed request
  assert page.external_requests == []  # offline: BokehJS inline, no CDN stylesheet (voila.json)


def test_leaving_an_app_shuts_its_kernel_down(voila_url, voila_log, page):
  _open(page, voila_url, "sai_explorer")
  started, _ = kernel_counts(voila_log)
  assert started >= 1
  leave(page)
  assert wait_for_kernels_shut_down(voila_log, SHUTDOWN_TIMEOUT_S), voila_log.read_text()[-2000:]


def test_audiogram_explorer_slider_redraws_the_impaired_nap(voila_url, page):
  _open(page, voila_url, "audiogram_explorer")
  before = _wait_for_image(page, "impaired ear")
  readout = page.locator(".dal-nap-readout")
  page.wait_for_function("() => document.querySelector('.dal-nap-readout').innerText.includes('%')",
                         timeout=UPDATE_TIMEOUT_MS)
  first_readout = readout.inner_text()
  handle = page.locator(".dal-audiogram-editor .noUi-handle").nth(I_4K)
  handle.focus()
  for _ in range(8):  # 8 x 5 dB: a 40 dB loss at 4 kHz
    handle.press("ArrowUp")
  page.wait_for_function(f"(p) => {{ const s = ({IMAGE_SUM_JS})(p); "
                         f"return s !== null && s !== {before}; }}",
                         arg="impaired ear", timeout=UPDATE_TIMEOUT_MS)
  page.wait_for_function(
      "(old) => document.querySelector('.dal-nap-readout').innerText !== old",
      arg=first_readout, timeout=UPDATE_TIMEOUT_MS)
  assert page.evaluate(IMAGE_SUM_JS, "impaired ear") < before  # less activity with the loss
  page.wait_for_function(f"() => ({AUDIOGRAM_JS})()?.[{I_4K}] === 40", timeout=UPDATE_TIMEOUT_MS)
  assert page.evaluate(AUDIOGRAM_JS) == [0, 0, 0, 0, 0, 40, 0, 0]  # the audiogram plot followed
  _assert_playable_audio(page, n_rows=3)  # clean, noisy (= clean in quiet), as heard
  _assert_fits(page)  # the difference panel's colour bar and the toolbar included
  _assert_no_errors(page)


def test_sai_explorer_shows_the_pitch_of_the_chosen_sound(voila_url, page):
  _open(page, voila_url, "sai_explorer")
  before = _wait_for_image(page, "SAI")
  page.get_by_text("Period 1/f0 = 8.0 ms").wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.locator("select").first.select_option("click train")
  page.wait_for_function(f"(p) => ({IMAGE_SUM_JS})(p) !== {before}", arg="SAI",
                         timeout=UPDATE_TIMEOUT_MS)
  assert page.locator(".dal-cochleagram canvas").count() >= 1
  assert page.locator(".dal-sai canvas").count() >= 1
  _assert_playable_audio(page, n_rows=2)
  _assert_fits(page)
  _assert_no_errors(page)


def test_hearing_aid_lab_difference_panel_leaves_the_sai_whole(voila_url, page):
  # The difference panel's colour bar widened the grid's column it was in and pushed the SAI to
  # its right past the app's edge (its toolbar cut off).
  _open(page, voila_url, "hearing_aid_lab")
  _wait_for_image(page, "SAI")
  page.locator(".widget-dropdown", has_text="difference").locator("select").select_option(
      "NAL-R \u2212 normal")
  _wait_for_image(page, "NAL-R \u2212 normal")
  page.wait_for_timeout(500)  # BokehJS lays the shown panel out
  _assert_fits(page)
  _assert_no_errors(page)


def _upload(page, scope, name, mime, content):
  """Chooses a file in the FileUpload widget under `scope` (its <input> is created on click)."""
  with page.expect_file_chooser() as chooser:
    page.locator(f"{scope} .widget-upload").first.click()
  chooser.value.set_files(files=[{"name": name, "mimeType": mime, "buffer": content}])


def test_hearing_aid_lab_fine_tune_progresses_and_cancels_and_views_answer(voila_url, page):
  _open(page, voila_url, "hearing_aid_lab")
  page.locator(".dal-metrics-table table").wait_for(timeout=LOAD_TIMEOUT_MS)  # every stage ran
  for prefix in ("normal ear", "impaired ear · unaided", "impaired ear · NAL-R",
                 "impaired ear · DAL", "SAI"):
    assert _wait_for_image(page, prefix) is not None
  # clean, noisy, and as heard: unaided, NAL-R, DAL (the bundled pretrained aid)
  _assert_playable_audio(page, n_rows=5)
  # The fine-tune reaches the progress bar, then Cancel stops it and keeps the pretrained aid.
  page.get_by_role("button", name="Start fine-tune").click()
  page.get_by_text("preparing", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.get_by_text(re.compile(r"step [1-9]\d*/20 · loss")).wait_for(timeout=FIRST_STEP_TIMEOUT_MS)
  page.get_by_role("button", name="Cancel").click()
  page.get_by_text(re.compile(r"cancelled at step \d+ of 20")).wait_for(timeout=UPDATE_TIMEOUT_MS)
  width = page.locator(".dal-finetune-progress .progress-bar").evaluate("e => e.style.width")
  assert float(width.rstrip("%")) > 0
  _assert_fits(page)  # the status line wraps: the settings and the loss curve stay whole
  bundled_steps = json.loads(
      pretrained.pretrained_dir().joinpath(checkpoint.MARKER).read_text())["step"]
  assert page.get_by_text(re.compile(rf"small SEANet, {bundled_steps} steps, for N3")).count() == 1
  # Hover names the CF; a click on a NAP moves the SAI to that time.
  canvas = page.locator(".dal-cochleagram canvas").first
  canvas.scroll_into_view_if_needed()  # Cancel scrolled the page down
  box = canvas.bounding_box()
  for dx in (0, 3):  # a second move: Bokeh shows the tooltip on mousemove inside the frame
    page.mouse.move(box["x"] + box["width"] * 0.5 + dx, box["y"] + box["height"] * 0.3)
  page.get_by_text(re.compile(r"^\d+ Hz$")).first.wait_for(timeout=UPDATE_TIMEOUT_MS)
  shown = page.get_by_text(re.compile(r"^t = \d\.\d{3} s$")).first.inner_text()
  page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.3)
  _wait_for_new_time(page, shown)
  # Play steps through the SAI frames and drags the NAP cursor (a Bokeh Span) along.
  shown = page.get_by_text(re.compile(r"^t = \d\.\d{3} s$")).first.inner_text()
  cursor = page.evaluate(SPAN_LOCATIONS_JS)
  page.locator(".widget-play button").first.click()
  _wait_for_new_time(page, shown)
  page.wait_for_function(f"(old) => JSON.stringify(({SPAN_LOCATIONS_JS})()) !== JSON.stringify(old)",
                         arg=cursor, timeout=UPDATE_TIMEOUT_MS)
  page.locator(".widget-play button").nth(1).click()  # stop
  # Audiogram and sound uploads: a good file loads, a bad one is refused with a reason.
  csv = b"# ear: left\nfreq_hz,threshold_db_hl\n250,12\n8000,42\n"
  _upload(page, ".dal-audiogram-editor", "mine.csv", "text/csv", csv)
  page.get_by_text("Loaded mine.csv", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  _upload(page, ".dal-audiogram-editor", "bad.json", "application/json", b"{")
  page.get_by_text("Could not load bad.json", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  _upload(page, ".dal-sound-picker", "notes.txt", "text/plain", b"not a sound")
  page.get_by_text("expected a WAV file", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  huge = b"RIFF\x00\x00\x00\x00WAVE" + bytes(12 * 2 ** 20)  # over tornado's default 10 MiB
  _upload(page, ".dal-sound-picker", "huge.wav", "audio/wav", huge)
  page.get_by_text("over the upload limit", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  _assert_no_errors(page)
