"""The protocol's evaluation (docs/PROTOCOL.md, "Test-time episodes" and "Metric").

- episodes.py: `TestEpisode`, the protocol's test episodes of a fold (supports per part of the
  organ's z-range, query slices in its ground-truth range, the query's voxel spacing);
- prediction.py: segmenting an episode's query slices with a model;
- overlap.py, surface_distance.py: voxel overlap counts and surface distances in mm;
- metrics.py: the registry `METRICS` of every score (Dice, precision, recall, HD95, ASSD);
- scoring.py: `evaluate_episodes` (episodes + model -> `Evaluation` of `ScanScore`s);
- reports.py: summary.json, scores.csv, table.md and the fold tables;
- figures.py: learning curves, Dice distributions and prediction overlays as PNG files.
"""
