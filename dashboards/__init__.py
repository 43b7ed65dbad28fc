"""canalflow dashboards component."""
