#!/usr/bin/env python
"""rnnkit against torch.nn, rnnkit.reference and onnxruntime: prints a markdown table.

The harness lives in rnnkit.bench (also ``rnnkit bench``); this script only calls it.

    python benchmarks/bench.py --quick
    python benchmarks/bench.py --out benchmarks/results.md
"""

import sys

from rnnkit.bench import main

if __name__ == "__main__":
    sys.exit(main())
