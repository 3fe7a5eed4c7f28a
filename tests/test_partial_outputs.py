"""A participant's derivatives and report are written as soon as that participant is done,
not when the whole run ends (issue 42: a long selfsr training of one subject held back the
files of another subject that had finished 25 minutes earlier).

Nipype's MultiProc submits nothing while the running nodes hold every processor, not even
the datasinks that run in the main process, and its Linear runs every participant's
super-resolution before any datasink; :mod:`bids_sr.cli.plugin` fixes both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_sr.cli.run import main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bids_sr" / "data" / "demo"


def _finished(work: Path, subject: str) -> float:
    """When the subject's super-resolution node finished (its result file was written)."""
    results = list(work.glob(f"bids_sr_wf/single_subject_{subject}_wf/anat_*_wf/super_resolve/"
                             "result_super_resolve.pklz"))  # fmt: skip
    assert len(results) == 1, results
    return results[0].stat().st_mtime


def _written(out: Path, subject: str) -> float:
    """When the last of the subject's files (image, sidecar, report) was written."""
    files = [*out.glob(f"sub-{subject}/**/anat/*"), out / f"sub-{subject}.html"]
    assert len(files) >= 3 and all(f.exists() for f in files), files
    return max(f.stat().st_mtime for f in files)


@pytest.mark.slow  # a two-participant run each (~20 s idle, ~70 s on busy cores)
@pytest.mark.parametrize("plugin", ["MultiProc", "Linear"])
def test_each_subject_is_written_before_the_next_one_finishes(tmp_path, plugin):
    """Two participants, each node taking every processor (--omp-nthreads = --nprocs), so
    the two super-resolutions run one after the other: the first participant's image,
    sidecar and report must exist before the second's super-resolution finishes."""
    out, work = tmp_path / "out", tmp_path / "work"
    code = main([str(DEMO), str(out), "participant", "--participant-label", "01", "03",
                 "--method", "bspline", "--nprocs", "2", "--omp-nthreads", "2",
                 "--plugin", plugin, "-w", str(work), "--skip-bids-validation"])  # fmt: skip
    assert code == 0
    finished = {subject: _finished(work, subject) for subject in ("01", "03")}
    first, second = sorted(finished, key=finished.get)
    assert _written(out, first) < finished[second], (
        f"sub-{first}'s outputs were written after sub-{second}'s super-resolution finished"
    )
