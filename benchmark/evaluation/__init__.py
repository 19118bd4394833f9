"""What a trial measures once it is trained, on its own device: the probes (`probe`, the raw-pixel baselines
cached per machine in `pixel_probes`, the per-epoch probe in `train_probe`), reconstruction and clustering
metrics, figures, and `evaluate`, which runs them all. Imports neither Ray nor MLflow."""
