"""Everything that serves only the Ray Tune sweep: the command line (`cli`, run as `python -m benchmark.sweep`),
its plan (`plan`, with `selection` for --only, the schedulers and the overriding options), the checks that refuse bad
input before Ray starts (`preflight`), Ray Tune's side (`runner`: the Tuners and the study loop; `trainable`: one
trial; `progress`, `interrupt`), where it keeps its state (`storage`, `state`), and what it prints (`dry_run`, `summary`).
"""
