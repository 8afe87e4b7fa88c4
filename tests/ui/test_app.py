"""make_app: each app builds from fake compute; limits come from the environment; the notebooks
and voila.json are what Voila serves."""
import json
import pathlib
from unittest import mock

import ipywidgets
import nbformat
import pytest
from test_workbench import WAIT_S, FakeCompute  # the shared fake science (tests/ui is on sys.path)

from dal_widgets.errors import ParameterError
from dal_widgets.ui import app as app_module
from dal_widgets.ui.app import KINDS, AppConfig, SAIExplorer, make_app
from dal_widgets.ui.cochleagram_view import robust_top
from dal_widgets.ui.workbench import DAL, NALR, Workbench

ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_CACHE = AppConfig(cache_dir="")  # tests must not switch on JAX's persistent cache


@pytest.fixture
def no_bokeh_loader():
  with mock.patch.object(app_module, "load_bokeh") as load_bokeh:
    yield load_bokeh


def _inner(widget):
  """The app inside make_app's (style, app) box."""
  return widget.children[1]


def test_hearing_aid_lab_is_the_whole_workbench_with_the_configured_caps(no_bokeh_loader):
  config = AppConfig(finetune_steps=7, max_steps=9, max_seconds=30.0, cache_dir="")
  lab = _inner(make_app("hearing_aid_lab", config=config, compute=FakeCompute()))
  no_bokeh_loader.assert_called_once()
  assert isinstance(lab, Workbench) and lab.aids == (NALR, DAL)
  assert lab.finetune.steps.value == 7 and lab.finetune.steps.max == 9
  assert lab.finetune.max_seconds == 30.0 and lab.finetune.size.options == ("small",)
  assert lab.editor.state.preset == "N3" and lab.metrics is not None and lab.sai_view is not None
  assert lab.wait(WAIT_S)
  assert lab.cochleagram.sources[NALR].data["image"]


def test_a_fine_tune_of_the_bundled_aid_starts_at_the_gentler_learning_rate(no_bokeh_loader):
  from dal_widgets.hearing.presets import preset
  from dal_widgets.loop.config import config_for
  fresh = _inner(make_app("hearing_aid_lab", config=NO_CACHE, compute=FakeCompute()))
  assert fresh.finetune.model is None
  assert fresh.finetune.learning_rate.value == config_for("widget").learning_rate

  class WithPretrained(FakeCompute):
    def pretrained_aid(self):
      return {"gain": 2.0}, config_for("widget").model_config, preset("N3"), 470

  lab = _inner(make_app("hearing_aid_lab", config=NO_CACHE, compute=WithPretrained()))
  assert lab.finetune.model.steps_done == 470
  assert lab.finetune.learning_rate.value == app_module.WIDGET_CONTINUE_LEARNING_RATE
  assert fresh.wait(WAIT_S) and lab.wait(WAIT_S)  # the listener is fitted: the panel can train
  assert lab.finetune.config().learning_rate == app_module.WIDGET_CONTINUE_LEARNING_RATE


def test_audiogram_explorer_shows_the_listener_parts_in_quiet(no_bokeh_loader):
  explorer = _inner(make_app("audiogram_explorer", config=NO_CACHE, compute=FakeCompute()))
  assert isinstance(explorer, Workbench) and explorer.aids == ()
  assert explorer.finetune is None and explorer.metrics is None and explorer.sai_view is None
  assert explorer.sound_picker.noise_kind.value == "quiet"
  assert explorer.wait(WAIT_S)


def test_sai_explorer_draws_nap_and_sai_of_the_chosen_sound(no_bokeh_loader):
  compute = FakeCompute()
  explorer = _inner(make_app("sai_explorer", config=NO_CACHE, compute=compute))
  assert isinstance(explorer, SAIExplorer) and explorer.wait(WAIT_S)
  first = explorer.cochleagram.sources["NAP"].data["image"][0].copy()
  assert explorer.sai_view.source.data["image"] and "8.0 ms" in explorer.note.value
  explorer.f0.value = 250
  assert explorer.wait(WAIT_S)
  assert "4.0 ms" in explorer.note.value
  assert (explorer.cochleagram.sources["NAP"].data["image"][0] != first).any()
  explorer.sound.value = "speech: b_02"
  assert explorer.wait(WAIT_S)
  assert explorer.f0.disabled and compute.calls["stimulus"] == 2
  assert explorer.player.players["sound"].value[:4] == b"RIFF"


def test_sai_explorer_listener_is_heard_and_seen_through_the_fitted_ear(no_bokeh_loader):
  compute = FakeCompute()
  explorer = _inner(make_app("sai_explorer", config=NO_CACHE, compute=compute))
  assert explorer.wait(WAIT_S)
  normal = explorer.cochleagram.sources["NAP"].data["image"][0].copy()
  explorer.listener.value = "N4"
  assert explorer.wait(WAIT_S)
  assert compute.calls["fit_refined"] == 1  # presets: the bundled (instant) refined fit
  assert explorer.cochleagram.sources["NAP"].data["image"][0].max() < normal.max()
  assert "N4 ear" in explorer.cochleagram.figures["NAP"].title.text


def test_sai_explorer_shows_a_listener_on_the_normal_ears_colour_scale(no_bokeh_loader):
  # a loss must look like less activity, not be rescaled to look as bright as normal hearing
  explorer = _inner(make_app("sai_explorer", config=NO_CACHE, compute=FakeCompute()))
  assert explorer.wait(WAIT_S)
  tops = lambda: (explorer.cochleagram.mapper.high, explorer.sai_view.mapper.high)
  normal = tops()
  explorer.listener.value = "N4"
  assert explorer.wait(WAIT_S)
  assert tops() == pytest.approx(normal)
  own = robust_top([explorer.sai_view._frames])  # what N4's frames alone would give
  assert own < 0.9 * normal[1] and "Colours on the normal ear" in explorer.note.value
  explorer.listener.value = "normal"
  assert explorer.wait(WAIT_S)
  assert tops() == pytest.approx(normal) and "Colours on the normal ear" not in explorer.note.value


def test_a_new_browser_view_gets_the_state_of_every_widget_again(no_bokeh_loader):
  # updates made by background threads while the page loads can be lost: a view re-syncs all
  root = make_app("audiogram_explorer", config=NO_CACHE, compute=FakeCompute())
  bench = _inner(root)
  assert bench.wait(WAIT_S)
  with mock.patch.object(ipywidgets.Widget, "send_state", autospec=True) as send_state:
    root._view_count = 1  # what the page reports when it shows the app
    sent_to = {id(call.args[0]) for call in send_state.call_args_list}
    expected = (bench.player.players["clean"], bench.player.players["clean"].layout,
                bench.readout, bench.busy, bench.editor.sliders[0], bench.sound_picker.snr.style)
    assert all(id(w) in sent_to for w in expected)
    assert id(bench.cochleagram.model) not in sent_to  # bokeh_model re-sends Bokeh documents
    send_state.reset_mock()
    root._view_count = 0  # the page went away: only that count itself is synced
    assert {call.args[0] for call in send_state.call_args_list} <= {root}


def test_unknown_kind_is_refused():
  with pytest.raises(ParameterError, match="kind: expected one of"):
    make_app("calculator", config=NO_CACHE)


def test_config_reads_the_environment_and_names_a_bad_variable():
  config = AppConfig.from_env({"DAL_FINETUNE_MAX_STEPS": "12", "DAL_FINETUNE_MAX_S": "45.5",
                               "DAL_MODEL_SIZES": "small, paper", "DAL_UPLOAD_MAX_BYTES": "1000",
                               "DAL_JAX_CACHE_DIR": ""})
  assert (config.max_steps, config.max_seconds, config.model_sizes) == (12, 45.5, ("small", "paper"))
  assert config.upload_max_bytes == 1000 and config.cache_dir == ""
  assert AppConfig.from_env({}) == AppConfig()
  for variable, value, expected in [
      ("DAL_FINETUNE_MAX_STEPS", "lots", "an integer >= 1"),
      ("DAL_FINETUNE_MAX_STEPS", "0", "an integer >= 1"),
      ("DAL_FINETUNE_MAX_S", "0", "seconds > 0"), ("DAL_FINETUNE_MAX_S", "nan", "seconds > 0"),
      ("DAL_UPLOAD_MAX_BYTES", "-5", "an integer >= 1"), ("DAL_UPLOAD_MAX_S", "inf", "seconds > 0"),
      ("DAL_MODEL_SIZES", "", "comma-separated names among"),
      ("DAL_MODEL_SIZES", "small,huge", "comma-separated names among")]:
    with pytest.raises(ParameterError, match=f"^{variable}: expected {expected}.*got {value!r}"):
      AppConfig.from_env({variable: value})


@pytest.mark.parametrize("kind", KINDS)
def test_each_notebook_is_a_title_and_one_make_app_call(kind):
  notebook = nbformat.read(ROOT / "apps" / f"{kind}.ipynb", as_version=4)
  code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
  assert code == [f'from dal_widgets.ui.app import make_app\n\nmake_app("{kind}")']
  assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")


def test_voila_config_hides_code_and_tracebacks_and_culls_idle_kernels():
  config = json.loads((ROOT / "voila.json").read_text())
  assert config["VoilaConfiguration"]["strip_sources"] is True
  assert config["VoilaConfiguration"]["show_tracebacks"] is False
  culling = config["MappingKernelManager"]
  assert culling["cull_idle_timeout"] > 0 and culling["cull_interval"] > 0
  assert culling["cull_connected"] is False  # an open page keeps its kernel (and its fine-tune)
  # an upload far over the app's limit still reaches the kernel, which refuses it with a reason
  # (tornado closes the connection on messages over its default 10 MiB)
  assert config["Voila"]["tornado_settings"]["websocket_max_message_size"] >= 50 * 2 ** 20
  assert 0 < config["VoilaExecutor"]["timeout"] <= 120  # make_app returns fast; heavy work is async
