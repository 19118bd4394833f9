"""MLflow, the one place runs are kept: the store and its URI rules (`store`), what made a run (`provenance`),
a sweep's parent run and each trial's run from start to end (`runs`), and a trial's model loaded back from its
run (`logged_model`, `benchmark.load_model`). Imports no torch: a report from a CSV must not need it."""
