"""vqcore quality benchmark: FP vs RTN vs baselines vs every registered method on the trained model zoo.

    python tools/bench/vqcore_quality.py --quick                 # CPU, ≤ 15 min
    python tools/bench/vqcore_quality.py --device cuda           # the larger setting quoted in the README

Writes results.json, results.md and grid_{video,image}.png (FP vs quantized samples at the lowest bit-widths) under
--out (default runs/bench/vqcore_quality). The logic lives in ``vqcore.zoo.bench``.
"""

import sys

from vqcore.zoo.bench import main

if __name__ == "__main__":
    sys.exit(main())
