"""The same answers on an AVX2 CPU without AVX-512 or VNNI, whatever CPU runs the suite.

QEMU's user-mode emulator (Debian's qemu-user, installed by ``make test``) runs the suite's own
Python with the CPUID of a Haswell: AVX2 and FMA, no AVX-512, no VNNI. ONNX Runtime's MLAS then
dispatches the AVX2 kernels it would pick on such a machine, whose u8s8 kernels saturate. The
test checks what issue 12 is about on that CPU class, on every machine: the check set catches
w8a8-dyn as wrong there, and w8a8-u8 there gives the very bytes it gives here (which, on a VNNI
machine, are also w8a8-dyn's). A hundred windows keep it to about a minute of emulation.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models.yamnet.checkset import Agreement, agreement, check_patches, load_reference
from models.yamnet.thresholds import load_thresholds
from models.yamnet.variant_meta import variant_path
from models.yamnet.variants import variant_logits

pytestmark = pytest.mark.slow
EVERY = 7  # one check window in seven: 103 windows from every clip

_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from numpy._core._multiarray_umath import __cpu_features__ as features
    from models.yamnet.checkset import check_patches
    from models.yamnet.variant_meta import variant_path
    from models.yamnet.variants import variant_logits

    assert features["AVX2"] and not features["AVX512F"], "not an AVX2-only CPU"
    patches = check_patches()[::{every}]
    out = {{name: variant_logits(variant_path(name), patches) for name in ("w8a8-dyn", "w8a8-u8")}}
    np.savez(sys.argv[1], **out)
    """
)


@pytest.fixture(scope="module")
def haswell(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CPU classes compared are x86-64 ones")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.fail("qemu-x86_64 is missing: `make test` installs Debian's qemu-user")
    out = tmp_path_factory.mktemp("haswell") / "logits.npz"
    script = _SCRIPT.format(every=EVERY)
    done = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, "-c", script, str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as data:
        return {name: data[name] for name in data.files}


def _subset_agreement(logits: np.ndarray) -> Agreement:
    reference = load_reference()
    subset = dataclasses.replace(reference, output_q=reference.output_q[::EVERY])
    return agreement(logits, subset, load_thresholds())


@pytest.mark.timeout(600)
def test_the_check_catches_saturating_kernels_on_avx2(haswell: dict[str, np.ndarray]) -> None:
    wrong = _subset_agreement(haswell["w8a8-dyn"])
    right = _subset_agreement(haswell["w8a8-u8"])
    assert not wrong.ok, wrong
    assert right.ok, right.problems


@pytest.mark.timeout(600)
def test_w8a8_u8_gives_the_same_bytes_on_avx2_as_here(haswell: dict[str, np.ndarray]) -> None:
    here = variant_logits(variant_path("w8a8-u8"), check_patches()[::EVERY])
    np.testing.assert_array_equal(haswell["w8a8-u8"], here)
