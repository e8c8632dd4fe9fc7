"""Caller ID names (app/sim/names.py): generated or loaded, and how clients read them
(PJSIPShowEndpoint, FreePBX's astdb keys)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.sim import Simulator, generated_name, load_names
from tests.sim.support import (
    Connect,
    parse,
)

# --- names ---


async def test_names_via_pjsip_show_endpoint(connect: Connect) -> None:
    async with Simulator(["101", "102"], context="blf", names={"101": 'Anna "Nan" Smith'}) as pbx:
        pbx.set_device_state("Custom:102", "RINGING")
        client = await connect(pbx)
        await client.login()
        await client.send("PJSIPShowEndpoint", Endpoint="101", ActionID="e1")
        ack, detail, end = await client.read_many(3)
        assert ack == (
            b"Response: Success\r\nActionID: e1\r\nEventList: start\r\n"
            b"Message: Following are Events for each object associated with the Endpoint\r\n\r\n"
        )
        headers = parse(detail)
        assert headers[:4] == [
            ("Event", "EndpointDetail"),
            ("ActionID", "e1"),
            ("ObjectType", "endpoint"),
            ("ObjectName", "101"),
        ]
        found = dict(headers)
        assert found["Callerid"] == '"Anna \\"Nan\\" Smith" <101>'
        assert (found["Context"], found["Aors"], found["Auth"]) == ("blf", "101", "101")
        assert headers[-2:] == [("DeviceState", "Not in use"), ("ActiveChannels", "0")]
        assert (
            end
            == b"Event: EndpointDetailComplete\r\nActionID: e1\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        )
        await client.send("PJSIPShowEndpoint", Endpoint="pjsip/102")
        _, detail, _ = await client.read_many(3)
        name = dict(parse(detail))["Callerid"]
        assert re.fullmatch(r'"[^"\s]+ [^"]+" <102>', name), name  # a generated name
        assert dict(parse(detail))["DeviceState"] == "Ringing"
        # res_pjsip's error texts end in a newline that goes out inside the line.
        assert await client.action("PJSIPShowEndpoint", Endpoint="999", ActionID="e2") == (
            b"Response: Error\r\nActionID: e2\r\nMessage: Unable to retrieve endpoint 999\n\r\n\r\n"
        )
        assert await client.action("PJSIPShowEndpoint") == (
            b"Response: Error\r\nMessage: PJSIPShowEndpoint requires an endpoint name\n\r\n\r\n"
        )


async def test_names_via_dbget_like_freepbx(connect: Connect) -> None:
    async with Simulator(["101", "102"], names={"101": "Jürgen Weiß"}) as pbx:
        client = await connect(pbx)
        await client.login()
        await client.send("DBGet", Family="AMPUSER", Key="101/cidname", ActionID="d1")
        ack, value, end = await client.read_many(3)
        assert (
            ack
            == b"Response: Success\r\nActionID: d1\r\nEventList: start\r\nMessage: Result will follow\r\n\r\n"
        )
        assert value == (
            b"Event: DBGetResponse\r\nFamily: AMPUSER\r\nKey: 101/cidname\r\n"
            + "Val: Jürgen Weiß\r\n".encode()  # UTF-8, as Asterisk sends its astdb
            + b"ActionID: d1\r\n\r\n"
        )
        assert end == b"Event: DBGetComplete\r\nActionID: d1\r\nEventList: Complete\r\nListItems: 1\r\n\r\n"
        await client.send("DBGet", Family="AMPUSER", Key="102/cidnum")
        assert parse((await client.read_many(3))[1]) == [
            ("Event", "DBGetResponse"),
            ("Family", "AMPUSER"),
            ("Key", "102/cidnum"),
            ("Val", "102"),
        ]
        for headers, message in [
            ({"Family": "AMPUSER", "Key": "103/cidname"}, b"Database entry not found"),
            ({"Family": "ampuser", "Key": "101/cidname"}, b"Database entry not found"),
            ({"Key": "101/cidname"}, b"No family specified."),
            ({"Family": "AMPUSER"}, b"No key specified."),
        ]:
            assert (
                await client.action("DBGet", **headers)
                == b"Response: Error\r\nMessage: " + message + b"\r\n\r\n"
            )


def test_generated_names_are_plausible_and_seeded() -> None:
    first, again, other = Simulator(["101"], seed=4), Simulator(["101"], seed=4), Simulator(["101"], seed=5)
    assert first.name_of("101") == again.name_of("101")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][\w']+", first.name_of("101"))
    assert len({generated_name(str(n)) for n in range(100, 150)}) > 40
    assert other.name_of("101")  # another seed, maybe another name
    with pytest.raises(ValueError):
        Simulator(["101"], names={"101": "two\r\nlines"})


def test_load_names(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    path.write_text('\ufeffexten,name,group\n# comment\n101,Anna Smith,Sales\n\n102,"Smith, Bob"\n')
    assert load_names(path) == {"101": "Anna Smith", "102": "Smith, Bob"}
    path.write_text("101\n")
    with pytest.raises(ValueError, match="line 1"):
        load_names(path)
    path.write_text("101,ok\n1 02,bad\n")
    with pytest.raises(ValueError, match="line 2"):
        load_names(path)
