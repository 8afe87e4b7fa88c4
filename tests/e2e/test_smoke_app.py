"""The smoke app in a real browser: BokehJS renders, no widget errors, a slider reaches the plot."""
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

RENDER_TIMEOUT_MS = 90_000  # kernel start + first execution of the notebook on 2 cores
UPDATE_TIMEOUT_MS = 15_000  # one kernel round trip plus the background compute
I_4K = 5  # index of the 4 kHz slider (FREQS_HZ = 250, 500, 1k, 2k, 3k, 4k, 6k, 8k)

# Reads the audiogram points of the right ear from the BokehJS documents of the page.
READ_AUDIOGRAM_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data) continue;
      const get = (k) => (data instanceof Map ? data.get(k) : data[k]);
      const th = get("threshold_db_hl");
      if (th && th.length) return Array.from(th);
    }
  }
  return null;
}"""


# Number of Bokeh image sources in the page that hold an image (data rendered before display too).
COUNT_FILLED_IMAGES_JS = """() => {
  let filled = 0;
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data) continue;
      const images = data instanceof Map ? data.get("image") : data["image"];
      if (images && images.length > 0) filled += 1;
    }
  }
  return filled;
}"""
N_IMAGE_PANELS = 4  # smoke app: normal, impaired, difference, SAI


def _open_smoke_app(page, voila_url):
  page.goto(f"{voila_url}/voila/render/_smoke.ipynb")
  page.locator(".bk-Canvas, canvas").first.wait_for(timeout=RENDER_TIMEOUT_MS)
  page.get_by_text("thresholds: 250 Hz: 0 dB HL").wait_for(timeout=RENDER_TIMEOUT_MS)


def test_smoke_app_renders_bokeh_without_widget_errors(voila_url, page):
  _open_smoke_app(page, voila_url)
  assert page.locator("canvas").count() >= 3  # cochleagram grid, SAI, audiogram
  page.wait_for_function(f"() => ({COUNT_FILLED_IMAGES_JS})() >= {N_IMAGE_PANELS}",
                         timeout=UPDATE_TIMEOUT_MS)
  assert page.locator(".jupyter-widgets-error-widget").count() == 0
  assert page.get_by_text("javascript error", exact=False).count() == 0
  assert page.get_by_text(re.compile(r"clipped \d+ samples")).count() == 1  # the loud "DAL" row
  assert page.errors == []


def test_cochleagram_hover_names_the_cf_in_hz(voila_url, page):
  _open_smoke_app(page, voila_url)
  box = page.locator(".dal-cochleagram canvas").first.bounding_box()
  for dx in (0, 3):  # a second move: Bokeh shows the tooltip on mousemove inside the frame
    page.mouse.move(box["x"] + box["width"] * 0.5 + dx, box["y"] + box["height"] * 0.3)
  page.get_by_text(re.compile(r"^\d+ Hz$")).first.wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.get_by_text(re.compile(r"^\d\.\d{3} s$")).first.wait_for(timeout=UPDATE_TIMEOUT_MS)
  assert page.errors == []


def test_audiogram_slider_updates_plot_and_summary(voila_url, page):
  _open_smoke_app(page, voila_url)
  handle = page.locator(".noUi-handle").nth(I_4K)
  handle.focus()
  handle.press("ArrowUp")
  handle.press("ArrowUp")
  page.get_by_text("4000 Hz: 10 dB HL").wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.wait_for_function(f"() => ({READ_AUDIOGRAM_JS})()?.[{I_4K}] === 10", timeout=UPDATE_TIMEOUT_MS)
  thresholds = page.evaluate(READ_AUDIOGRAM_JS)
  assert thresholds == [0, 0, 0, 0, 0, 10, 0, 0]
  assert page.errors == []


def _upload(page, name, mime, content):
  """Chooses a file in the FileUpload widget (its <input type=file> is created on click)."""
  with page.expect_file_chooser() as chooser:
    page.locator(".widget-upload").click()
  chooser.value.set_files(files=[{"name": name, "mimeType": mime, "buffer": content}])


def test_audiogram_upload_loads_a_file_and_reports_a_bad_one(voila_url, page):
  _open_smoke_app(page, voila_url)
  csv = b"# ear: left\nfreq_hz,threshold_db_hl\n250,12\n8000,42\n"  # off the 5 dB grid on purpose
  _upload(page, "mine.csv", "text/csv", csv)
  page.get_by_text("Loaded mine.csv", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  loaded = re.compile("250 Hz: 12 dB HL.*8000 Hz: 42 dB HL")
  page.get_by_text(loaded).wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.wait_for_timeout(1000)  # a slider that snapped 12 to its 5 dB step would send 10 by now
  assert page.get_by_text(re.compile("250 Hz: 12 dB HL")).count() == 1
  _upload(page, "bad.json", "application/json", b"{")
  page.get_by_text("Could not load bad.json", exact=False).wait_for(timeout=UPDATE_TIMEOUT_MS)
  assert page.get_by_text(re.compile("250 Hz: 12 dB HL")).count() == 1
  assert page.locator(".jupyter-widgets-error-widget").count() == 0
  assert page.errors == []


# Largest location of a Bokeh Span in the page (the cochleagram time cursor when it moved).
MAX_SPAN_LOCATION_JS = """() => {
  let best = 0;
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      if (model.type === "Span") {
        best = Math.max(best, model.location ?? 0);
      }
    }
  }
  return best;
}"""


def test_sai_play_moves_the_linked_cochleagram_cursor(voila_url, page):
  _open_smoke_app(page, voila_url)
  page.locator(".widget-play button").first.click()
  page.get_by_text(re.compile(r"t = 0\.[1-9]\d\d s")).wait_for(timeout=UPDATE_TIMEOUT_MS)
  page.wait_for_function(f"() => ({MAX_SPAN_LOCATION_JS})() > 0.05", timeout=UPDATE_TIMEOUT_MS)
  assert page.errors == []


def test_click_on_the_cochleagram_moves_the_sai_frame(voila_url, page):
  _open_smoke_app(page, voila_url)
  box = page.locator(".dal-cochleagram canvas").first.bounding_box()
  page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
  page.get_by_text(re.compile(r"t = 0\.[1-9]\d\d s")).wait_for(timeout=UPDATE_TIMEOUT_MS)
  assert page.errors == []
