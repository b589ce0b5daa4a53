"""The packages, for setuptools; everything else is in pyproject.toml.

The experiment configs have one copy, the repository's top-level
``experiments/``, where they are edited.  The wheel carries them inside the
package, as ``gdlab/experiments/*.yaml``: the package ``gdlab.experiments``
is that folder (``package_dir``) and its YAML files are its data.
``gdlab.catalog`` reads them from the checkout when there is one, else from
the installed package through ``importlib.resources``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gdlab", "gdlab.*"]),
              "gdlab.experiments"],
    package_dir={"gdlab.experiments": "experiments"},
    package_data={"gdlab.experiments": ["*.yaml"]},
)
