"""Save container images for air-gapped networks, compatible with hangar v1.6 archives."""
