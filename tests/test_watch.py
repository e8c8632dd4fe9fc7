"""What `blf-panel watch` prints: the table and the change lines."""

import json

from app.watch import change_lines, render_table


def test_render_table_and_change_lines() -> None:
    snapshot = {
        "version": 3,
        "updated_at": 0,
        "pbx": {"connected": False, "since": 0},
        "extensions": {
            f"{n}@ext-local": {"exten": str(n), "context": "ext-local", "state": "idle", "changed_at": 0}
            for n in (101, 99, 100)
        },
    }
    table = render_table(snapshot, width=80)
    head, *rows = table.splitlines()
    assert head.startswith("PBX DISCONNECTED") and "3 extensions" in head
    assert rows[0].split()[0] == "99" and " ?" in rows[0]  # numeric order; unconfirmed marker
    later = json.loads(json.dumps(snapshot))
    later["extensions"]["100@ext-local"]["state"] = "ringing"
    del later["extensions"]["101@ext-local"]
    later["pbx"]["connected"] = True
    lines = change_lines(snapshot, later)
    assert [line.split("  ", 1)[1] for line in lines] == [
        "PBX connected",
        "100@ext-local  idle -> ringing",
        "101@ext-local  removed",
    ]
