"""mutmut 3's command line, with one change: symlinks under tests/ are copied as links.

mutmut copies tests/ into its working copy mutants/ with shutil.copytree, which follows
symlinks; the sysfs fixtures (tests/fixtures/*/sys) hold the loops real sysfs has
(`nvme0n1/device -> ..`), so the copy fails with "Too many levels of symbolic links".
Copied as links (the old links replaced on each run), the fixtures stay what they are. `make mutation` runs this.

    .venv/bin/python benchmarks/mutmut_run.py run --max-children 2 'gdslab.plan.*'
"""

from __future__ import annotations

import os
import shutil
import sys

_copytree = shutil.copytree


def _copytree_keeping_links(src, dst, symlinks=True, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
    # A second run copies over the first: links left there would make os.symlink fail.
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                os.unlink(os.path.join(root, name))
    return _copytree(src, dst, True, *args, **kwargs)


shutil.copytree = _copytree_keeping_links

from mutmut.__main__ import cli  # noqa: E402  (after the patch: mutmut reads shutil.copytree at call time)

if __name__ == "__main__":
    sys.exit(cli())
