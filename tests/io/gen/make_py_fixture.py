"""Write tests/io/data/py_written.safetensors with the Python `safetensors`
package, so the C reader is tested on a file the reference writer made.
The values follow formulas that tests/io/test_st.c recomputes.

    /work/venv/bin/python tests/io/gen/make_py_fixture.py
"""
import os

import numpy as np
from safetensors.numpy import save_file

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "data", "py_written.safetensors")
tensors = {
    "w": (np.arange(42, dtype=np.float32) * 0.25 - 3.0).reshape(6, 7),
    "h": ((np.arange(5) - 2) * 0.5).astype(np.float16),
    "ids": np.arange(4, dtype=np.int64) * 1000003,
    "empty": np.zeros((0, 3), dtype=np.float32),
}
save_file(tensors, out, metadata={"writer": "python safetensors"})
print(out, os.path.getsize(out), "bytes")
