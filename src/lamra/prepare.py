"""``python -m lamra.prepare``: build the cached assets once (used by scripts/setup.sh)."""

from __future__ import annotations

import time

from lamra.assets import lamra_home, smollm2_dir


def main() -> None:
    start = time.perf_counter()
    path = smollm2_dir()
    print(f"SmolLM2-135M-Instruct: {path} ({time.perf_counter() - start:.1f} s)")
    print(f"LAMRA_HOME={lamra_home()}")


if __name__ == "__main__":
    main()
