"""Frozen dataclasses that are JAX pytrees.

Fields marked with ``static_field()`` are part of the tree structure (hashed, drive
compilation); every other field is a leaf (an array). Arrays are never hashed.
"""
import dataclasses

import jax


def static_field(**kwargs):
  """A dataclass field that is static metadata of the pytree, not a leaf."""
  return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
  """Decorator: a frozen dataclass registered as a pytree (see module doc)."""
  cls = dataclasses.dataclass(frozen=True)(cls)
  fields = dataclasses.fields(cls)
  meta = [f.name for f in fields if f.metadata.get("static", False)]
  data = [f.name for f in fields if not f.metadata.get("static", False)]
  return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def replace(obj, **changes):
  """dataclasses.replace, re-exported so science code imports one module."""
  return dataclasses.replace(obj, **changes)
