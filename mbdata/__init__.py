"""mbdata: recipes, sources, attack simulation, MB-Defense mixtures, dedup, audit, shards.

The Python API behind the ``mb`` command::

    import mbdata
    recipe = mbdata.load_recipe("recipes/demo.yaml")     # validated, with fingerprint
    out = mbdata.build(recipe, "builds/demo")            # atomic build folder
    tables = mbdata.build_in_memory(recipe).tables       # every stage, nothing written
    b = mbdata.open_build(out)                           # lenient: a missing split is empty
    b.table("train"); b.polars("eval_clean"); b.dataset("recovery")
    mbdata.export(out, "trl", "exports/trl")
"""

from .build import build, build_in_memory
from .core.errors import MBError
from .io.buildio import Build, open_build, verify_build
from .io.exporters import export
from .io.readers import read_any
from .io.schema import SCHEMA
from .recipe import LoadedRecipe, Recipe, fingerprint, load_recipe, recipe_from_dict

__all__ = [
    "SCHEMA",
    "Build",
    "LoadedRecipe",
    "MBError",
    "Recipe",
    "build",
    "build_in_memory",
    "export",
    "fingerprint",
    "load_recipe",
    "open_build",
    "read_any",
    "recipe_from_dict",
    "verify_build",
]
