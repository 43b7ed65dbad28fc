"""District files with a metering hierarchy below the village, built from the demo district as an
operator would write them: sub-meters declared ``below:`` the village intake, blocks and
households declared with ``parent:``.

G1 (王家村): intake G1-IN; blocks B1 (wheat, sub-meter G1-B1, households H1 100 mu and H2 200 mu
by area) and B2 (cotton 400 mu, sub-meter G1-B2); the loss below G1-IN shared by metered volume.
G2 (马家村): intake G2-IN; blocks C1 (wheat 200 mu, G2-C1) and C2 (vegetables 100 mu, G2-C2);
the loss borne by the village (``loss: parent``).
"""

from __future__ import annotations

from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-district.yaml"

POINTS = """\
  - {id: G1-IN, name: 王家村进水口, role: intake, canal: L12, km: 2.8, gateway: GW-B1, unit_id: 41, profile: em-pipe}
  - {id: G1-B1, name: 王家村一组分水表, role: intake, canal: L12, km: 2.8, below: G1-IN, gateway: GW-B1, unit_id: 42, profile: em-pipe}
  - {id: G1-B2, name: 王家村二组分水表, role: intake, canal: L12, km: 2.8, below: G1-IN, gateway: GW-B1, unit_id: 43, profile: em-pipe}
  - {id: G2-IN, name: 马家村进水口, role: intake, canal: L12, km: 2.5, gateway: GW-B1, unit_id: 44, profile: em-pipe}
  - {id: G2-C1, name: 马家村粮田分水表, role: intake, canal: L12, km: 2.5, below: G2-IN, gateway: GW-B1, unit_id: 45, profile: em-pipe}
  - {id: G2-C2, name: 马家村菜田分水表, role: intake, canal: L12, km: 2.5, below: G2-IN, gateway: GW-B1, unit_id: 46, profile: em-pipe}
"""

UNITS = """\
  - {id: G1, name: 王家村, kind: village, township: T1, charging_points: [G1-IN], loss: metered}
  - {id: G1-B1, name: 王家村一组, kind: block, township: T1, parent: G1, charging_points: [G1-B1]}
  - {id: G1-B1-H1, name: 王大户, kind: household, township: T1, parent: G1-B1, share: area, crops: [{crop: wheat, area_mu: 100}]}
  - {id: G1-B1-H2, name: 王二户, kind: household, township: T1, parent: G1-B1, share: area, crops: [{crop: wheat, area_mu: 200}]}
  - {id: G1-B2, name: 王家村二组, kind: block, township: T1, parent: G1, charging_points: [G1-B2], crops: [{crop: cotton, area_mu: 400}]}
  - {id: G2, name: 马家村, kind: village, township: T1, charging_points: [G2-IN], loss: parent}
  - {id: G2-C1, name: 马家村粮田组, kind: block, township: T1, parent: G2, charging_points: [G2-C1], crops: [{crop: wheat, area_mu: 200}]}
  - {id: G2-C2, name: 马家村菜田组, kind: block, township: T1, parent: G2, charging_points: [G2-C2], crops: [{crop: vegetables, area_mu: 100}]}
"""


def grid_text(*replacements: tuple[str, str], points: str = POINTS, units: str = UNITS) -> str:
    """The demo district with the grid villages added, then each (old, new) replaced once."""
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace("\ntownships:", "\n" + points + "\ntownships:", 1)
    text = text.replace("\nseasons:", "\n" + units + "\nseasons:", 1)
    for old, new in replacements:
        assert text.count(old) == 1, f"test setup: {old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


def write_grid(tmp_path: Path, *replacements: tuple[str, str], **kw: str) -> Path:
    path = tmp_path / "grid-district.yaml"
    path.write_text(grid_text(*replacements, **kw), encoding="utf-8")
    return path
