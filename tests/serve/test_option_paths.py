"""No AnimateOptions field that holds a path can be set by a client: it is an upload role or a server setting."""

import dataclasses
import typing

from real3d.pipeline import AnimateOptions
from real3d.serve.options import FILE_ROLES, OPTION_TYPES, SERVER_FIELDS


def test_path_fields_are_never_client_options():
    hints = typing.get_type_hints(AnimateOptions)
    path_fields = {f.name for f in dataclasses.fields(AnimateOptions) if "Path" in str(hints[f.name])}
    assert path_fields, "AnimateOptions has path fields"
    assert not path_fields & set(OPTION_TYPES)
    assert path_fields <= set(FILE_ROLES) | SERVER_FIELDS, sorted(path_fields - set(FILE_ROLES) - SERVER_FIELDS)
