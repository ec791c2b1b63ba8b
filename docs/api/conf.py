"""Sphinx configuration of the API reference (built by ``.ci/run`` with warnings as errors).

Build: ``python3 -m sphinx -W --keep-going -b html docs/api docs/_build/api``. The package is
imported from the environment (``pip install -e ".[test]"``), not from a path set here.
"""

project = "ppl_vae"
author = "ppl_vae developers"
copyright = "ppl_vae developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",  # math is written to the HTML as TeX; nothing is fetched at build time
]

# Docstrings are reStructuredText with field lists (``:param type name:``), as in Pyro; no
# Napoleon.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "none"  # signatures as written; types are in the :param: lists
autodoc_inherit_docstrings = False  # Pyro's inherited docstrings are Pyro's to build
autoclass_content = "class"
nitpicky = False

html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]
