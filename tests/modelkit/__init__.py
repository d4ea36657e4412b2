"""Test models built offline, once per machine, cached on disk by a hash of their inputs."""
