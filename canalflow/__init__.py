"""canalflow: irrigation-district water metering from canal gate to village bill."""

__version__ = "0.1.0"
