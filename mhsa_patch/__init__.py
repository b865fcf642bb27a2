"""mhsa-patch: add BoTNet's multi-head self-attention (MHSA) to an installed ultralytics, exactly and reversibly."""

__version__ = "0.1.0"
