"""gdslab's best host path beside the read floor, Run:ai Model Streamer, fastsafetensors and safetensors.

    .venv/bin/python benchmarks/compare.py --size 4GiB --shards 4 --repeats 5 --out docs/results/compare.md

The same as `gdslab bench --compare ...`; the benchmark itself lives in gdslab/compare.py
(so the CLI and this script run one piece of code). `--help` lists the knobs.
"""

import sys

from gdslab.compare import main

if __name__ == "__main__":
    sys.exit(main())
