"""How fast byu gives up on hostile or stalled inputs (the timings the unit tests check only functionally).

    python benchmarks/timeouts.py            # each case 3 times; prints the median and the worst, in seconds

- **download stall**: a fake portal (127.0.0.1) that is silent for 3 s before the headers, then stalls for 3 s
  after 50,000 bytes; ``download_file`` with a 0.5 s read timeout gives up on each stall and resumes. Target:
  < 2.5 s, well under the 6 s the stalls last (about 2 x 0.5 s of timeouts plus the transfer).
- **billion laughs**: a CVAT XML export with nested entities (10^9 ``lol`` if expanded) is refused. Target < 2 s.
- **1 GiB export**: a sparse 1 GiB CVAT XML file is refused from its size, before parsing. Target < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MRC = "10001/TS_002/Reconstructions/VoxelSpacing8.000/Tomograms/502/TS_002.mrc"


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times)


def _refused(fn: Callable[[], object]) -> Callable[[], None]:
    from byu.errors import InputError

    def run() -> None:
        try:
            fn()
        except InputError:
            return
        raise SystemExit("expected the input to be refused")

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from byu.portal.download import download_file
    from byu.review.decisions import parse_cvat_xml
    from tests.cvat_support import make_cases
    from tests.fakes.portal import default_seed, start_fake_portal

    rows = []
    with tempfile.TemporaryDirectory(prefix="byu-timeouts-") as tmp:
        work = Path(tmp)
        with start_fake_portal(default_seed(work / "portal")) as portal:
            def stalled_download() -> None:
                portal.fault(MRC, "slow:3", "stall:50000:3")
                dest = work / "a.mrc"
                dest.unlink(missing_ok=True)
                download_file(portal.url_of(MRC), dest, backoff=0.01, timeout=(2.0, 0.5))

            rows.append(("download stall (2 stalls of 3 s, 0.5 s read timeout)", 2.5,
                         *_timed(stalled_download, args.repeats)))

        cases = make_cases([3, 2, 0], kinds=["FN", "FP", "FN"])
        ents = '<!ENTITY l0 "lol">' + "".join(
            f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
        laughs = work / "laughs.xml"
        laughs.write_text(f'<?xml version="1.0"?><!DOCTYPE annotations [{ents}]><annotations><version>&l9;'
                          "</version></annotations>")
        rows.append(("billion laughs refused", 2.0, *_timed(_refused(lambda: parse_cvat_xml(laughs, cases)),
                                                             args.repeats)))
        big = work / "huge.xml"
        with open(big, "wb") as fh:  # sparse: claims 1 GiB, uses no disk
            fh.truncate(2**30)
        rows.append(("1 GiB export refused", 1.0, *_timed(_refused(lambda: parse_cvat_xml(big, cases)),
                                                           args.repeats)))

    print(f"{'case':58s} {'median s':>9s} {'worst s':>8s} {'target s':>9s}  ok")
    ok = True
    for name, target, median, worst in rows:
        good = worst < target
        ok &= good
        print(f"{name:58s} {median:9.3f} {worst:8.3f} {'< ' + format(target, 'g'):>9s}  {'yes' if good else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
