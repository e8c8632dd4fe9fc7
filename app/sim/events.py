"""Builders of the events the simulated PBX sends: states, channels, bridges, endpoints, logins.
Do not break: header names and order and the `Privilege`/`ActionID` rules are Asterisk 22's as
recorded in tests/fixtures/ami/; the collector's parsers are tested against these bytes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from app.sim.wire import Header, action_id_header, authority_to_str, encode, event_tv
from app.states import STATUS_TEXT

if TYPE_CHECKING:
    from app.sim.calls import Bridge, Channel
    from app.sim.model import Presence

_CALL_CLASS: Header = ("Privilege", "call,all")


def _lead(list_id: str | None) -> list[Header]:
    """Unsolicited (no `list_id`) an event carries `Privilege: call,all`; as an item of a
    list it carries the list's ActionID instead (nothing when the client sent none)."""
    return [_CALL_CLASS] if list_id is None else action_id_header(list_id)


# --- states ---


def extension_status(
    exten: str, context: str, hint: str, status: int, *, list_id: str | None = None
) -> bytes:
    """An ExtensionStatus event: unsolicited it carries `Privilege: call,all`; as an item of
    ExtensionStateList (list_id given) it carries the ActionID instead (transcript 03)."""
    return encode(
        [
            ("Event", "ExtensionStatus"),
            *_lead(list_id),
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint),
            ("Status", status),
            ("StatusText", STATUS_TEXT.get(status, "Unknown")),
        ]
    )


def device_state_change(device: str, state: str, *, list_id: str | None = None) -> bytes:
    """A DeviceStateChange event, unsolicited or as a DeviceStateList item (transcript 04)."""
    return encode([("Event", "DeviceStateChange"), *_lead(list_id), ("Device", device), ("State", state)])


def presence_state_change(presentity: str, presence: Presence, *, list_id: str | None = None) -> bytes:
    """A PresenceStateChange event, unsolicited or as a PresenceStateList item (transcript 12)."""
    return encode(
        [
            ("Event", "PresenceStateChange"),
            *_lead(list_id),
            ("Presentity", presentity),
            ("Status", presence.state),
            ("Subtype", presence.subtype),
            ("Message", presence.message),
        ]
    )


def presence_status(exten: str, context: str, hint: str, presence: Presence) -> bytes:
    """The PresenceStatus event a hint sends when its presence changed (transcript 12)."""
    return encode(
        [
            ("Event", "PresenceStatus"),
            _CALL_CLASS,
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint),
            ("Status", presence.state),
            ("Subtype", presence.subtype),
            ("Message", presence.message),
        ]
    )


# --- the PBX and its sessions ---


def fully_booted(uptime: int, last_reload: int) -> bytes:
    return encode(
        [
            ("Event", "FullyBooted"),
            ("Privilege", "system,all"),
            ("Uptime", uptime),
            ("LastReload", last_reload),
            ("Status", "Fully Booted"),
        ]
    )


def shutdown_event() -> bytes:
    return encode(
        [
            ("Event", "Shutdown"),
            ("Privilege", "system,all"),
            ("Shutdown", "Cleanly"),
            ("Restart", "True"),
        ]
    )


def successful_auth(username: str, session_id: str, local: str, remote: str) -> bytes:
    """The security event Asterisk queues after a login (transcript 01)."""
    now = event_tv()
    return encode(
        [
            ("Event", "SuccessfulAuth"),
            ("Privilege", "security,all"),
            ("EventTV", now),
            ("Severity", "Informational"),
            ("Service", "AMI"),
            ("EventVersion", "1"),
            ("AccountID", username),
            ("SessionID", session_id),
            ("LocalAddress", local),
            ("RemoteAddress", remote),
            ("UsingPassword", "0"),
            ("SessionTV", now),
        ]
    )


def db_get_response(family: str, key: str, value: str, action_id: str) -> bytes:
    """main/db.c manager_dbget(): the value comes in a DBGetResponse whose ActionID is last."""
    headers: list[Header] = [("Event", "DBGetResponse"), ("Family", family), ("Key", key), ("Val", value)]
    return encode([*headers, *action_id_header(action_id)])


# manager.c handle_showmanconn(): the header and one line per session, same widths.
_CONNECTED_ROW = "  {:<15.15}  {:<55.55}  {:<10}  {:<10}  {:<8}  {:<8}  {:<50.50} {:<50.50}"
_CONNECTED_HEADER = (
    *("Username", "IP Address", "Start", "Elapsed"),
    *("FileDes", "HttpCnt", "ReadPerms", "WritePerms"),
)


def connected_lines(sessions: Iterable[tuple[str, str, int, int, int]], now: float) -> list[str]:
    """`manager show connected`: (username, ip, start epoch, fd, perms) per logged-in session,
    then the count. Lines are right-trimmed, as the header the CLI prints."""
    rows = [_CONNECTED_ROW.format(*_CONNECTED_HEADER).rstrip()]
    for username, ip, start, fd, perms in sessions:
        perm_text = authority_to_str(perms)
        rows.append(
            _CONNECTED_ROW.format(username, ip, start, int(now) - start, fd, 0, perm_text, perm_text).rstrip()
        )
    rows.append(f"{len(rows) - 1} users connected.")
    return rows


# --- PJSIP endpoints ---


def callerid_merge(name: str, number: str) -> str:
    """callerid.c ast_callerid_merge(): `"Anna Smith" <101>`, quotes and backslashes escaped."""
    if name and number:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{number}>'
    return name or number or "<unknown>"


# ast_devstate2str(): the DeviceState text of PJSIP endpoints.
_DEVICE_STATE_TEXT = {
    "UNKNOWN": "Unknown",
    "NOT_INUSE": "Not in use",
    "INUSE": "In use",
    "BUSY": "Busy",
    "INVALID": "Invalid",
    "UNAVAILABLE": "Unavailable",
    "RINGING": "Ringing",
    "RINGINUSE": "Ring+Inuse",
    "ONHOLD": "On Hold",
}

# The EndpointDetail of a phone. Asterisk lists the sorcery fields in the order of its hash
# container. The fields up to SrtpTag32 are in the order of a real Asterisk 22 dump (asterisk
# issue #1254); no transcript covers the rest, which come in an order of our own, shortened.
_ENDPOINT_FIELDS: tuple[tuple[str, str], ...] = (
    ("RpidImmediate", "false"),
    ("Webrtc", "no"),
    ("Ignore183WithoutSdp", "false"),
    ("SendAoc", "false"),
    ("DeviceStateBusyAt", "0"),
    ("T38UdptlMaxdatagram", "0"),
    ("CodecPrefsIncomingAnswer", "prefer:pending, operation:intersect, keep:all, transcode:allow"),
    ("SecurityNegotiation", "no"),
    ("DtlsRekey", "0"),
    ("NamedPickupGroup", ""),
    ("DirectMediaMethod", "invite"),
    ("SendRpid", "false"),
    ("PickupGroup", ""),
    ("SdpSession", "Asterisk"),
    ("DtlsVerify", "No"),
    ("MessageContext", ""),
    ("Tenantid", ""),
    ("Mailboxes", ""),
    ("RecordOnFeature", "automixmon"),
    ("DtlsPrivateKey", ""),
    ("DtlsFingerprint", "SHA-256"),
    ("OverlapContext", ""),
    ("OutgoingCallOfferPref", "remote_merge"),
    ("FromDomain", ""),
    ("TimersSessExpires", "1800"),
    ("NamedCallGroup", ""),
    ("DtlsCipher", ""),
    ("MediaEncryptionOptimistic", "false"),
    ("SuppressQ850ReasonHeaders", "false"),
    ("Aors", "{exten}"),
    ("IdentifyBy", "username,ip"),
    ("CalleridPrivacy", "allowed_not_screened"),
    ("MwiSubscribeReplacesUnsolicited", "no"),
    ("CosAudio", "0"),
    ("FollowEarlyMediaFork", "true"),
    ("Context", "{context}"),
    ("RtpSymmetric", "true"),
    ("Transport", "transport-udp"),
    ("MohSuggest", "default"),
    ("T38Udptl", "false"),
    ("FaxDetect", "false"),
    ("T38BindUdptlToMediaAddress", "false"),
    ("TosVideo", "0"),
    ("SrtpTag32", "false"),
    ("Auth", "{exten}"),
    ("OutboundAuth", ""),
    ("Callerid", "{callerid}"),
    ("CalleridTag", ""),
    ("Allow", "(ulaw|alaw)"),
    ("DtmfMode", "rfc4733"),
    ("DirectMedia", "false"),
    ("ForceRport", "true"),
    ("RewriteContact", "true"),
    ("TrustIdInbound", "false"),
    ("TrustIdOutbound", "false"),
    ("SendPai", "false"),
    ("Language", ""),
    ("AllowSubscribe", "true"),
    ("SubscribeContext", ""),
    ("AccountCode", ""),
)


def endpoint_detail(
    exten: str, name: str, context: str, device_state: str, channels: int, action_id: str
) -> bytes:
    """res_pjsip format_ami_endpoint(): the sorcery fields, then DeviceState and
    ActiveChannels (a count of the endpoint's channels since asterisk issue #1254's fix)."""
    values = {"exten": exten, "context": context, "callerid": callerid_merge(name, exten)}
    return encode(
        [
            ("Event", "EndpointDetail"),
            *action_id_header(action_id),
            ("ObjectType", "endpoint"),
            ("ObjectName", exten),
            *((key, value.format(**values)) for key, value in _ENDPOINT_FIELDS),
            ("DeviceState", _DEVICE_STATE_TEXT.get(device_state, "Unknown")),
            ("ActiveChannels", channels),
        ]
    )


# --- channels and bridges (transcripts 14, 15) ---


def channel_event(event: str, channel: Channel, *extra: Header) -> bytes:
    return encode([("Event", event), _CALL_CLASS, *channel.headers(), *extra])


def dial_event(event: str, caller: Channel, callee: Channel, *extra: Header) -> bytes:
    """DialBegin/DialState/DialEnd: the caller's snapshot, then the callee's as Dest*."""
    headers = [*caller.headers(), *callee.headers("Dest"), *extra]
    return encode([("Event", event), _CALL_CLASS, *headers])


def bridge_event(event: str, bridge: Bridge, channel: Channel | None = None) -> bytes:
    headers = [*bridge.headers(), *(channel.headers() if channel else [])]
    return encode([("Event", event), _CALL_CLASS, *headers])


def core_show_channel(channel: Channel, action_id: str, now: float) -> bytes:
    """A CoreShowChannel item (transcript 15): no Privilege, Duration HH:MM:SS."""
    seconds = max(0, int(now - channel.created))
    return encode(
        [
            ("Event", "CoreShowChannel"),
            *action_id_header(action_id),
            *channel.headers(),
            ("Application", channel.application),
            ("ApplicationData", channel.app_data),
            ("Duration", f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"),
            ("BridgeId", channel.bridge_id),
        ]
    )


def blind_transfer_event(
    transferer: Channel, transferee: Channel, bridge: Bridge, context: str, exten: str
) -> bytes:
    """main/stasis_bridges.c blind_transfer_to_ami(): Result, the two channel snapshots
    (prefixes Transferer, Transferee), the bridge, IsExternal (Yes: asked over AMI), Context
    and Extension."""
    return encode(
        [
            ("Event", "BlindTransfer"),
            _CALL_CLASS,
            ("Result", "Success"),
            *transferer.headers("Transferer"),
            *transferee.headers("Transferee"),
            *bridge.headers(),
            ("IsExternal", "Yes"),
            ("Context", context),
            ("Extension", exten),
        ]
    )


def pickup_event(channel: Channel, target: Channel) -> bytes:
    """main/pickup.c call_pickup_to_ami(): the picker's channel, then the picked one as Target*."""
    return encode([("Event", "Pickup"), _CALL_CLASS, *channel.headers(), *target.headers("Target")])
