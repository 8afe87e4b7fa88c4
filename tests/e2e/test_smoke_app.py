"""The smoke app in a real browser: BokehJS renders, no widget errors, a slider reaches the plot."""
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


def _open_smoke_app(page, voila_url):
  page.goto(f"{voila_url}/voila/render/_smoke.ipynb")
  page.locator(".bk-Canvas, canvas").first.wait_for(timeout=RENDER_TIMEOUT_MS)
  page.get_by_text("thresholds: 250 Hz: 0 dB HL").wait_for(timeout=RENDER_TIMEOUT_MS)


def test_smoke_app_renders_bokeh_without_widget_errors(voila_url, page):
  _open_smoke_app(page, voila_url)
  assert page.locator("canvas").count() >= 3  # cochleagram grid, SAI, audiogram
  assert page.locator(".jupyter-widgets-error-widget").count() == 0
  assert page.get_by_text("javascript error", exact=False).count() == 0
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
