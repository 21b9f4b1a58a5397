"""Peak memory of a calibrated build against the number of calibration samples.

    python bench/bench_calib_memory.py                    # 64 vs 512 samples, 3x128x128 inputs
    python bench/bench_calib_memory.py --samples 64,1024 --hw 96

For each calibration format (.npy, .npz, a folder of .npy files, a folder of PNG images)
the data is written once per sample count, then `qcompiler build --target x86 --calib DATA`
runs in a fresh child process that reports its own peak RSS (VmHWM, Linux). The verdict is
the ratio of the peak at the largest count to the peak at the smallest, measured in the
same run: calibration streams its data, so the ratio must stay <= 1.25 (flat). The data's
own size is printed beside it: a format that read its file whole would grow by about that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

LIMIT = 1.25
# The child's own high-water mark (VmHWM: reset by exec). ru_maxrss is not: Linux keeps the
# forking parent's peak across fork and exec, and this parent has just written the data.
CHILD = """
import sys
from qcompiler.cli.main import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as f:
    print("PEAK_KB", next(line.split()[1] for line in f if line.startswith("VmHWM")))
sys.exit(rc)
"""


def write_data(fmt: str, root: Path, n: int, hw: int) -> Path:
    rng = np.random.default_rng(0)
    if fmt == "npy":
        path = root / "calib.npy"
        a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, hw, hw))
        for i in range(n):  # written sample by sample: the writer stays small too
            a[i] = rng.random((3, hw, hw), dtype=np.float32)
        a.flush()
        del a
        return path
    if fmt == "npz":
        path = root / "calib.npz"
        np.savez(path, input=rng.random((n, 3, hw, hw), dtype=np.float32))
        return path
    folder = root / f"calib_{fmt}"
    folder.mkdir()
    if fmt == "folder":
        for i in range(n):
            np.save(folder / f"{i:05d}.npy", rng.random((3, hw, hw), dtype=np.float32))
        return folder
    from PIL import Image

    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def peak_kb(model: Path, data: Path, out: Path) -> int:
    cmd = [sys.executable, "-c", CHILD, "build", str(model), "--target", "x86", "--calib", str(data),
           "-o", str(out), "--force", "-q"]
    # cwd outside the repository: `python -c` puts the cwd first on sys.path, where the source
    # folder (without the mapped passes/ and targets/) would shadow the installed package
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=model.parent)
    if p.returncode != 0:
        raise SystemExit(f"build failed: {p.stderr.strip()}")
    return int(next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("PEAK_KB")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", default="64,512", help="two sample counts, small,large")
    ap.add_argument("--hw", type=int, default=128, help="input height and width")
    ap.add_argument("--formats", default="npy,npz,folder,images")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    small, large = (int(s) for s in args.samples.split(","))
    from fixtures.models import conv_bn_relu

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-calib-mem-") as d:
        root = Path(d)
        model = root / "model.onnx"
        onnx.save(conv_bn_relu(cin=3, cout=16, hw=args.hw), str(model))
        for fmt in args.formats.split(","):
            peaks = {}
            for n in (small, large):
                sub = root / f"{fmt}_{n}"
                sub.mkdir()
                data = write_data(fmt, sub, n, args.hw)
                peaks[n] = peak_kb(model, data, sub / "out.onnx")
            ratio = peaks[large] / peaks[small]
            data_mb = large * 3 * args.hw * args.hw * 4 / 1e6
            rows.append({"format": fmt, f"peak_mb_{small}": round(peaks[small] / 1024, 1),
                         f"peak_mb_{large}": round(peaks[large] / 1024, 1), "ratio": round(ratio, 3),
                         f"float32_data_mb_{large}": round(data_mb, 1), "flat": ratio <= LIMIT})
            print(f"{fmt:<8} {small:>5} samples: {peaks[small] / 1024:7.1f} MB   {large:>5} samples: "
                  f"{peaks[large] / 1024:7.1f} MB   ratio {ratio:5.3f} ({'flat' if ratio <= LIMIT else 'GROWS'}; "
                  f"the {large} samples are {data_mb:.0f} MB as float32)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"hw": args.hw, "samples": [small, large], "limit": LIMIT,
                                               "rows": rows}, indent=2) + "\n")
    if not all(r["flat"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
