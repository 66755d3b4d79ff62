"""Print two evaluations of the same fold side by side: Dice per organ, e.g. before and after training.

    python scripts/compare_evaluations.py runs/demo/evaluation_fold0_initial runs/demo/evaluation_fold0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from evaluation.reports import SUMMARY_NAME, format_value  # noqa: E402  (after the path set-up)
from utils.io import read_json  # noqa: E402


def comparison_table(folders: list[Path]) -> str:
    summaries = [read_json(folder / SUMMARY_NAME) for folder in folders]
    organs = list(dict.fromkeys(organ for summary in summaries for organ in summary["organs"]))
    header = ["organ", *(f"{folder.name} (step {summary['step']})" for folder, summary in zip(folders, summaries))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for organ in organs:
        cells = [format_value(summary["organs"][organ]["dice"], "dice") if organ in summary["organs"] else ""
                 for summary in summaries]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    lines.append("| **mean Dice** | " + " | ".join(f"**{format_value(s['mean_dice'], 'dice')}**" for s in summaries) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="evaluation folders written by test.py (with summary.json)")
    print(comparison_table(parser.parse_args().folders))


if __name__ == "__main__":
    main()
