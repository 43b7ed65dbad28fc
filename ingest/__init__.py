"""canalflow ingest component."""
