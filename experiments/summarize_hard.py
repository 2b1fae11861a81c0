"""`python experiments/summarize_hard.py <study dir>… [--out DIR]`: a thin wrapper of jointcap.analysis.paired."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jointcap.analysis.paired import main  # noqa: E402

if __name__ == "__main__":
    main()
