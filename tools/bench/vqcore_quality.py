"""vqcore quality benchmark: FP vs RTN vs baselines vs every registered method on the trained model zoo.

    python tools/bench/vqcore_quality.py --quick                 # CPU, ≤ 15 min
    python tools/bench/vqcore_quality.py --device cuda           # one seed, both small kinds, the full preset
    python tools/bench/vqcore_quality.py --full --device cuda --out $OUT --results-root $OUT --max-seconds 480
                                                                 # issue 20: 3 kinds x 3 seeds + ablations

The first two write results.json, results.md and grid_{video,image}.png (FP vs quantized samples at the lowest
bit-widths) under --out (default runs/bench/vqcore_quality); the logic lives in ``vqcore.zoo.bench``. ``--full``
(``vqcore.zoo.bench_full``) appends each finished unit to <out>/vqcore_quality_units.jsonl, resumes from such a
file (``--resume-from``), stops before ``--max-seconds`` and, once no unit is left, writes
<results-root>/vqcore/vqcore_quality.json for the README's blocks; ``--full --plan`` lists its units.
"""

import sys

from vqcore.zoo.bench import main

if __name__ == "__main__":
    sys.exit(main())
