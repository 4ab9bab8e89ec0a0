"""The optional compiled build: pyproject.toml holds all of the project's metadata; this file only
adds, when asked, the parser's shift-reduce loop compiled to C by mypyc (compiler/syntax/driver.py).

    MESHC_MYPYC=1 python setup.py build_ext --inplace             # in a checkout: next to driver.py
    MESHC_MYPYC=1 python -m pip install --no-build-isolation .      # an install; setuptools, wheel
                                                                    # and mypy in the environment
Both need mypy (which brings mypyc) and a C compiler.

Without MESHC_MYPYC=1 (the README's `pip install .`, CI's `pip install -e '.[test]'`) the build is
pure Python, as before: nothing needs a C compiler. `--no-build-isolation` lets the build use the
environment's mypy (a build requirement of its own would make every install download mypy); it
also uses the environment's setuptools and wheel.
"""

import os

from setuptools import setup

ext_modules = []
if os.environ.get("MESHC_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(["compiler/syntax/driver.py"], opt_level="3")

setup(ext_modules=ext_modules)
