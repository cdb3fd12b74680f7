"""A screen's console looks normal: Ray's constructor-arguments error line of Ray Data actors is dropped from the
driver's stderr (every other byte passes through in order, Python's and native writes alike), a progress bar's last
line is drawn once, and a small screen's rate is not printed as 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scannet_platform.console import RAY_DATA_ACTOR_ARGUMENTS, dropping_stderr

#: The line Ray 2.60 printed in a screen on a local Ray (scannet screen lib.smi --out ..., 2026-12-06).
RAY_LINE = (
    b"[2026-12-06 23:31:30,988 E 24552 24552] core_worker.cc:2465: Actor with class name: "
    b"'MapWorker(MapBatches(ChunkScreener))' and ID: 'f512aa1a94beed206f7202c901000000' has constructor arguments "
    b"in the object store and max_restarts > 0. If the arguments in the object store go out of scope or are lost, "
    b"the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details.\n"
)


def test_the_ray_data_actor_line_is_dropped_and_everything_else_kept_in_order():
    script = f"""
import os, sys
from scannet_platform.console import without_ray_data_actor_warning
with without_ray_data_actor_warning():
    sys.stderr.write("\\rscreening:   0%|          | 0/4")  # a progress bar's refresh, no newline
    sys.stderr.flush()
    os.write(2, {RAY_LINE!r})  # native code writes to the file descriptor
    print("a Python line", file=sys.stderr)
    sys.stderr.flush()
    os.write(2, b"[2026-12-06 23:31:31,000 E 1 1] core_worker.cc:99: a real error\\n")
print("after the block", file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)  # bytes: \r kept
    assert result.stderr == (
        b"\rscreening:   0%|          | 0/4a Python line\n"
        b"[2026-12-06 23:31:31,000 E 1 1] core_worker.cc:99: a real error\nafter the block\n"
    )


def test_the_pattern_matches_only_ray_data_workers():
    assert RAY_DATA_ACTOR_ARGUMENTS.search(RAY_LINE)
    assert not RAY_DATA_ACTOR_ARGUMENTS.search(RAY_LINE.replace(b"MapWorker(MapBatches(ChunkScreener))", b"Trainer"))


def test_stderr_is_restored_after_an_exception(capfd):
    try:
        with dropping_stderr(RAY_DATA_ACTOR_ARGUMENTS):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    os.write(2, RAY_LINE)  # outside the block nothing is filtered
    assert capfd.readouterr().err == RAY_LINE.decode()


def test_a_progress_bar_in_a_log_draws_its_final_count_once():
    import io

    from scannet_platform.console import Progress

    log = io.StringIO()  # not a terminal: every drawing stays, as in `ray job submit` output
    with Progress(total=4, desc="screening", file=log, mininterval=0) as bar:
        bar.set_postfix(screened=3, quarantined=1, refresh=False)
        bar.update(4)
    drawings = [line for line in log.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert sum("4/4" in line for line in drawings) == 1, drawings
    assert "screened=3" in drawings[-1]


def test_a_progress_bar_closed_before_its_last_count_was_drawn_draws_it_at_close():
    import io

    from scannet_platform.console import Progress

    log = io.StringIO()
    with Progress(total=4, desc="screening", file=log, mininterval=3600) as bar:  # no drawing between counts
        bar.update(4)
    drawings = [line for line in log.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert sum("4/4" in line for line in drawings) == 1, drawings

@pytest.mark.parametrize("rate, text", [(0.3441, "0.34"), (2.91, "2.9"), (0.0, "0"), (156.4, "156"), (12345.6, "12,346")])
def test_a_small_screens_rate_is_not_printed_as_zero(rate, text):
    from scannet_platform.screen.job import per_second

    assert per_second(rate) == text
