"""The facade: ``from snakepool import Client, Pool``, ``snakepool.errors``.

``snakepool.__all__`` names exactly what it gives (and ``dir`` lists it, the lazily
loaded names too); ``snakepool.errors`` exports every class of the tree, each a
``SnakepoolError`` that survives ``copy`` with its data; importing the facade under
``-W error`` warns of nothing and loads neither Celery nor Redis.
"""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys

import pytest

import snakepool
from snakepool import errors

pytestmark = pytest.mark.timeout(60)


def test_all_names_what_the_facade_gives_and_dir_lists_it() -> None:
    assert sorted(snakepool.__all__) == [
        "AsyncClient",
        "Client",
        "Pool",
        "SnakepoolError",
        "errors",
    ]
    assert set(snakepool.__all__) <= set(dir(snakepool))
    for name in snakepool.__all__:
        assert getattr(snakepool, name) is not None
    with pytest.raises(AttributeError):
        snakepool.Nothing  # noqa: B018 - the lazy lookup refuses other names


def test_every_error_class_is_exported_and_keeps_its_data() -> None:
    defined = {
        name
        for name, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, BaseException) and value.__module__ == errors.__name__
    }
    exported = {name for name in errors.__all__ if name[0].isupper()}
    assert defined == exported and len(exported) == 16
    for name in exported:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.SnakepoolError)
        assert errors.error_class(name) is cls
        error = cls("m", field="question")
        again = copy.deepcopy(error)
        assert (type(again), again.message, again.field) == (cls, "m", "question")
        assert type(errors.error_from_dict(error.to_dict())) is cls


def test_the_facade_imports_cleanly_under_w_error() -> None:
    code = (
        "import sys, snakepool\n"
        "from snakepool import errors, SnakepoolError\n"
        "assert 'celery' not in sys.modules and 'redis' not in sys.modules\n"
        "from snakepool import Client, Pool, AsyncClient\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
