"""Data side of the project: dataset specs, folds, volume loading, derived files and episodes.

See docs/DESIGN.md ("Data on disk", "Dataset specs", "Episodes") for the contracts.
"""
