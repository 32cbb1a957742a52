"""Run ``python -m jbim_reid.cli`` and SIGKILL it at a chosen moment (crash tests).

Usage: ``python -c "import crash_hook; crash_hook.main()" train --config-file ...`` (the same as
``python -m jbim_reid.cli train --config-file ...``) with
``JBIM_CRASH`` set to ``KIND:MATCH:N``:

- ``during:MATCH:N``: the N-th file written through ``jbim_reid.utils.fileio.atomic_write`` whose path
  contains MATCH is killed half-way (half its bytes in the temporary file, fsynced);
- ``after:MATCH:N``: killed right after that file is complete;
- ``batch::N``: killed before the N-th training step (mid-epoch).

Without ``JBIM_CRASH`` the command runs normally.
"""
import io
import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str) -> None:
    """Patch jbim_reid so that the process kills itself as ``spec`` says."""
    import jbim_reid.cli  # noqa: F401  (imports every module patched below)
    from jbim_reid.datasets import cache
    from jbim_reid.engines import JBIMEngine
    from jbim_reid.evaluation import reports
    from jbim_reid.training import resume
    from jbim_reid.utils import fileio

    kind, match, n = spec.split(":")
    n = int(n)
    seen = {"count": 0}
    if kind == "batch":
        step = JBIMEngine.forward_backward

        def forward_backward(self, data):
            seen["count"] += 1
            if seen["count"] == n:
                _die()
            return step(self, data)

        JBIMEngine.forward_backward = forward_backward
        return
    original = fileio.atomic_write

    def atomic_write(path, write):
        hit = match in str(path)
        if hit:
            seen["count"] += 1
        if hit and seen["count"] == n and kind == "during":
            def half(f):
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()

            return original(path, half)
        result = original(path, write)
        if hit and seen["count"] == n and kind == "after":
            _die()
        return result

    for module in (fileio, reports, resume, cache):
        module.atomic_write = atomic_write


def main() -> None:
    """``jbim_reid.cli.main()`` on ``sys.argv[1:]``, with the hook of ``JBIM_CRASH`` installed."""
    from jbim_reid import cli

    spec = os.environ.get("JBIM_CRASH")
    if spec:
        install(spec)
    sys.exit(cli.main())
