"""canalflow firmware_sim component."""
