"""The API image has no torch: importing and building the app must not pull it in."""

from __future__ import annotations

import subprocess
import sys


def test_importing_and_building_the_app_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'worker.jobs')))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
