"""Check the C safetensors code against the Python `safetensors` package.

    mkdir -p /tmp/stk && GRPO_ST_KEEP=/tmp/stk build/tests/io/test_st
    /work/venv/bin/python tests/io/gen/check_python.py /tmp/stk

test_st leaves in the directory every image it used:
  good_*.safetensors   accepted by the C reader (incl. good_c_written_*, a
                       file written by st_writer): Python must load them and
                       see the same tensors;
  bad_*.safetensors    rejected by the C reader as malformed: Python must
                       reject them too (else the C reader is stricter than
                       the format);
  unsup_*.safetensors  valid format that grpo refuses (dtype F64, 5 dims):
                       Python must load them.
Exit status 0 when every file agrees.
"""
import glob
import os
import struct
import sys

import safetensors

d = sys.argv[1]
bad = 0
counts = {"good": 0, "bad": 0, "unsup": 0}
for path in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
    kind = os.path.basename(path).split("_")[0]
    data = open(path, "rb").read()
    try:
        tensors = safetensors.deserialize(data)
        ok, err = True, None
    except Exception as e:  # the package raises SafetensorError and others
        ok, err = False, e
    want = kind in ("good", "unsup")
    counts[kind] += 1
    if ok != want:
        bad += 1
        print(f"DISAGREE {os.path.basename(path)}: python {'accepts' if ok else 'rejects'}"
              f"{'' if ok else ': ' + str(err)}")
    elif ok and os.path.basename(path).startswith("good_c_written"):
        n = struct.unpack("<Q", data[:8])[0]
        assert (8 + n) % 8 == 0, "data section not 8-byte aligned"
        names = sorted(name for name, _ in tensors)
        print("C-written file loads in python:", names)
        with safetensors.safe_open(path, framework="numpy") as f:
            print("  metadata:", f.metadata())
            a = f.get_tensor("x.a")
            print("  x.a", a.dtype, a.shape, "step", f.get_tensor("step"))
print(f"{counts} checked, {bad} disagreements")
sys.exit(1 if bad else 0)
