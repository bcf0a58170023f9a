"""The monitor service: quality, drift, concept drift, label-free estimates and alerts."""
