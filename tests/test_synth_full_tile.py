"""The synthesizer at full tile size (10980² at 10 m), the size ``bench/`` measures.

In a file of its own: it is the longest single test of the suite (minutes on a busy 2-core machine), and with
``--dist loadfile`` a file is one unit of work; alone, it runs beside the rest of ``test_synth.py`` (the
scheduling in ``conftest.py`` hands it out first).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_synth import POST

import synthesizer as synth


@pytest.mark.slow
def test_full_tile_renders_at_native_resolutions() -> None:
    # the full 10980² tile that bench/ measures (its render time is in the benchmark, not asserted here)
    a = synth.render_scene(POST, 10980, seed=0)
    assert a.boa["B08"].shape == (10980, 10980) and a.boa["B08"].dtype == np.float32
    assert a.scl.shape == (5490, 5490)
