"""One validator per file format (golden.formats): each accepts a valid sample and refuses every garbled variant
(tests/fuzz_formats.py) with one line naming the file, never another exception."""
from __future__ import annotations

import pytest

from golden.errors import UserError
from golden.formats import FORMATS, validate

from .fuzz_formats import CACHES, GARBLES, NEEDS_PARAMS, PARAMS, SAMPLES, garbles, sample


def test_every_format_has_a_sample_and_garbles():
    assert set(SAMPLES) == set(FORMATS) == set(GARBLES), "a format added to golden.formats needs a sample and " \
                                                          "garbled variants in tests/fuzz_formats.py"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_validator_accepts_a_sample_and_refuses_each_garble(fmt, tmp_path):
    if fmt in NEEDS_PARAMS and not PARAMS.is_file():
        pytest.skip(f"needs {PARAMS}")
    valid = sample(fmt, tmp_path / "valid")
    validate(fmt, valid)
    variants = garbles(fmt, valid, tmp_path / "bad")
    assert len(variants) >= 5
    for name, path in variants.items():
        if fmt in CACHES and name == "missing":
            assert validate(fmt, path)["results"] == {}   # a new cache
            continue
        if fmt in ("images", "benchmarks") and name == "truncated-png":
            continue   # a folder's images are checked one by one when each is read (dfsq.data.load_rgb)
        with pytest.raises(UserError) as exc:
            validate(fmt, path)
            pytest.fail(f"{fmt}: the garbled variant {name!r} passed its validator")
        text = str(exc.value)
        assert len(text.splitlines()) == 1, (fmt, name, text)
        assert path.name in text or str(path) in text, f"{fmt}/{name}: the message does not name the file: {text}"


def test_format_count():
    """The closing note quotes these counts."""
    assert len(FORMATS) >= 15
