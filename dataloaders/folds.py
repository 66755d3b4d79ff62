"""Cross-validation folds of the SSL-ALPNet protocol (docs/PROTOCOL.md, "Cross-validation folds").

Scan ids sorted as integers form a circular list. Fold k takes block k of `queries_per_fold`
scans as queries and, by default, the next `n_shots` scans as supports (SSL-ALPNet's
`support_idx = [n_queries]`); training uses every other scan. The Q-Net family instead picks the
support inside the block (its third scan); that variant is the named option `"in_block"`.
"""
from __future__ import annotations

from dataclasses import dataclass

from dataloaders.specs import DatasetSpec

SUPPORT_CHOICES = ("next", "in_block")

# Q-Net family: the support is the third scan of the fold's block (0-based position 2).
IN_BLOCK_SUPPORT_POSITION = 2


@dataclass(frozen=True)
class FoldSplit:
    """Scan ids of one fold: queries (evaluated), supports (labelled shots), training scans."""

    query_ids: tuple[int, ...]
    support_ids: tuple[int, ...]
    train_ids: tuple[int, ...]


def fold_split(spec: DatasetSpec, fold: int, n_shots: int = 1, support_choice: str = "next") -> FoldSplit:
    """Query, support and training scan ids of `fold` for `spec`.

    support_choice "next": queries = block `fold`, supports = the `n_shots` ids after it
    (circular). "in_block": supports = `n_shots` ids of the block starting at its third scan,
    queries = the rest of the block.
    """
    if not isinstance(fold, int) or not 0 <= fold < spec.n_folds:
        raise ValueError(f"{spec.name}: fold must be an integer in 0..{spec.n_folds - 1}, got {fold!r}")
    if n_shots < 1:
        raise ValueError(f"{spec.name}: n_shots must be >= 1, got {n_shots}")
    if support_choice not in SUPPORT_CHOICES:
        raise ValueError(f"unknown support_choice {support_choice!r}; choose one of {SUPPORT_CHOICES}")

    ids = sorted(int(scan_id) for scan_id in spec.scan_ids)
    n_scans = len(ids)
    block_size = spec.queries_per_fold
    start = fold * block_size
    block = [ids[(start + offset) % n_scans] for offset in range(block_size)]

    if support_choice == "next":
        if block_size + n_shots > n_scans:
            raise ValueError(f"{spec.name}: {n_shots} support scans do not fit beside {block_size} queries in {n_scans} scans")
        queries = block
        supports = [ids[(start + block_size + shot) % n_scans] for shot in range(n_shots)]
    else:
        if IN_BLOCK_SUPPORT_POSITION + n_shots > block_size:
            raise ValueError(
                f"{spec.name}: support_choice 'in_block' needs blocks of at least "
                f"{IN_BLOCK_SUPPORT_POSITION + n_shots} scans for {n_shots} shot(s); blocks have {block_size}"
            )
        supports = block[IN_BLOCK_SUPPORT_POSITION : IN_BLOCK_SUPPORT_POSITION + n_shots]
        queries = [scan_id for scan_id in block if scan_id not in supports]

    held_out = set(queries) | set(supports)
    train = [scan_id for scan_id in ids if scan_id not in held_out]
    return FoldSplit(query_ids=tuple(queries), support_ids=tuple(supports), train_ids=tuple(train))
