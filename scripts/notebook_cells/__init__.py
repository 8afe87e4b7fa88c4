"""Cell texts of the teaching notebooks, one module per notebook (see scripts/make_notebooks.py).

Each module defines NAME (the file name without .ipynb) and CELLS, a list of ("md" | "code", text).
"""
from notebook_cells import nb01, nb02, nb03, nb04, nb05

NOTEBOOKS = {module.NAME: module.CELLS for module in (nb01, nb02, nb03, nb04, nb05)}
