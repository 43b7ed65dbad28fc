"""The web workbench for billing clerks and the public water-use notice (``canalflow web``)."""
