"""Schematic coordinates of the metering points, for the geomap panel and the previews.

The district file places points on the canal graph (canal + chainage), not on the earth. This
lays the graph out as a schematic map: main canals run east from the headworks, each offtake
turns 90° left or right of its source canal (alternating), and 1 km of canal is 1 km on the map.
The result is a gazetteer file (Grafana's ``[{key, latitude, longitude, name}]`` lookup format)
that the geomap panel joins to query results by the ``point`` tag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canalflow.district import District

KM_PER_DEGREE_LAT = 111.32
# Where the schematic is anchored: the Weishan headworks area of the Yellow River (Liaocheng).
DEFAULT_ORIGIN = (36.20, 116.10)


@dataclass(frozen=True)
class Place:
    key: str
    name: str
    latitude: float
    longitude: float
    x_km: float
    y_km: float


def _canal_geometry(district: District) -> dict[str, tuple[float, float, float]]:
    """For each canal: start (x, y) in km and heading in radians."""
    geometry: dict[str, tuple[float, float, float]] = {}
    for index, headworks in enumerate(district.spec.headworks):
        origin = (0.0, -10.0 * index)
        for child_index, canal in enumerate(district.children.get(headworks.id, [])):
            geometry[canal.id] = (origin[0], origin[1] - 3.0 * child_index, 0.0)
    pending = [c for c in district.spec.canals if c.id not in geometry]
    while pending:
        progressed = False
        for canal in list(pending):
            if canal.source not in geometry:
                continue
            sx, sy, heading = geometry[canal.source]
            siblings = district.children[canal.source]
            side = 1 if siblings.index(canal) % 2 == 0 else -1
            x = sx + canal.offtake_km * math.cos(heading)
            y = sy + canal.offtake_km * math.sin(heading)
            geometry[canal.id] = (x, y, heading + side * math.pi / 2)
            pending.remove(canal)
            progressed = True
        if not progressed:  # a canal without a laid-out source: place it beside the rest
            for canal in pending:
                geometry[canal.id] = (0.0, 10.0, 0.0)
            break
    return geometry


def schematic_places(district: District, origin: tuple[float, float] = DEFAULT_ORIGIN) -> list[Place]:
    """One place per metering point, in district file order."""
    geometry = _canal_geometry(district)
    lat0, lon0 = origin
    km_per_degree_lon = KM_PER_DEGREE_LAT * math.cos(math.radians(lat0))
    places = []
    for point in district.spec.points:
        sx, sy, heading = geometry[point.canal]
        x = sx + point.km * math.cos(heading)
        y = sy + point.km * math.sin(heading)
        places.append(
            Place(
                key=point.id,
                name=point.name or point.id,
                latitude=round(lat0 + y / KM_PER_DEGREE_LAT, 6),
                longitude=round(lon0 + x / km_per_degree_lon, 6),
                x_km=x,
                y_km=y,
            )
        )
    return places


def gazetteer(district: District) -> list[dict[str, object]]:
    """The lookup file Grafana's geomap reads (legacy worldmap format, keyed by point id)."""
    return [
        {"key": p.key, "name": p.name, "latitude": p.latitude, "longitude": p.longitude}
        for p in schematic_places(district)
    ]


def gazetteer_path(district_id: str) -> str:
    """Where docker-compose mounts the gazetteer inside the Grafana container (public/ is served)."""
    return f"public/gazetteer/canalflow-{district_id}.json"
