"""The cluster around a sweep: the head's MLflow server, and `cluster.yaml` rendered for a local test."""
