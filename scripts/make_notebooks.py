"""Writes the teaching notebooks in notebooks/ from the cell texts below (nbformat, no outputs).

    python scripts/make_notebooks.py            # (re)write notebooks/0*.ipynb
    python scripts/make_notebooks.py --check    # exit 1 if a notebook differs from this script

Edit the text here, not the .ipynb files: tests/test_notebooks.py checks that they agree.
Cell ids are derived from the notebook name and the cell position, so the output is
byte-for-byte reproducible and diffs stay small.
"""
import argparse
import pathlib
import sys
import textwrap

import nbformat

from dal_widgets import atomic

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from notebook_cells import NOTEBOOKS as SPECS  # noqa: E402  (cell texts: scripts/notebook_cells/)

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}


def _cell(kind: str, text: str, cell_id: str):
  source = textwrap.dedent(text).strip("\n")
  if kind == "md":
    return nbformat.v4.new_markdown_cell(source, id=cell_id)
  return nbformat.v4.new_code_cell(source, id=cell_id)


def build(name: str, cells) -> nbformat.NotebookNode:
  """One notebook from [(kind, text)], kind "md" or "code"."""
  stem = name.split("_", 1)[0]
  nb = nbformat.v4.new_notebook()
  nb.cells = [_cell(kind, text, f"nb{stem}-{i:02d}") for i, (kind, text) in enumerate(cells)]
  nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
  nbformat.validate(nb)
  return nb


def build_all() -> dict:
  """{file name: notebook} of every teaching notebook."""
  return {f"{name}.ipynb": build(name, cells) for name, cells in SPECS.items()}


def render(nb) -> str:
  return nbformat.writes(nb, version=4) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="compare, do not write")
  parser.add_argument("--out", type=pathlib.Path, default=NOTEBOOKS, help="output folder")
  args = parser.parse_args(argv)
  stale = []
  for filename, nb in build_all().items():
    path = args.out / filename
    text = render(nb)
    if args.check:
      if not path.is_file() or path.read_text(encoding="utf-8") != text:
        stale.append(filename)
    else:
      path.parent.mkdir(parents=True, exist_ok=True)
      atomic.write_text_atomic(path, text)
      print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
  if stale:
    print("out of date (run python scripts/make_notebooks.py): " + ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
