"""Acting from the panel (ACTIONS=on): POST /actions/<action> checks who acts, on what and how
often, then asks the PBX through the action session. Do not break: every check is made here on
the server whatever the form says; the channel to transfer is the PBX's answer for the actor's
own phone at that moment, never a name from the form; every outcome is one audit line.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.action_session import ActionSession, Frame, PbxUnreachable
from app.auth.identify import peer_of, request_language
from app.auth.users import User
from app.calls import channel_device
from app.i18n import N_
from app.look import TILE_ACTIONS
from app.said import Said
from app.schema import ExtensionJSON, QueueJSON, clean_text
from app.settings import ACTION_NAMES, Settings
from app.states import EXTEN_RE
from app.store import StoreError
from app.tiles import PRESENCE_LABELS

log = logging.getLogger(__name__)
audit = logging.getLogger("blf-panel.audit")

# What each panel action sends, and the manager.conf write class Asterisk 22 checks for it
# (main/manager.c ast_manager_register_xml_core; apps/app_queue.c). CoreShowChannels
# (system or reporting) finds the actor's own channel. The README's list is checked against it.
AMI_ACTIONS: Mapping[str, tuple[str, str]] = {
    "call": ("Originate", "originate"),
    "pickup": ("Originate", "originate"),  # Application: PickupChan
    "listen": ("Originate", "originate"),  # Application: ChanSpy
    "transfer": ("BlindTransfer", "call"),
    "attended": ("Atxfer", "call"),
    "pause": ("QueuePause", "agent"),
    "presence": ("Setvar", "call"),
}
LOOKUP = ("CoreShowChannels", "reporting")
WRITE_CLASSES = "call,originate,reporting,agent"
# app_presencestate.c's states a user may set (PRESENCE_STATE write).
PRESENCES = ("available", "away", "dnd", "xa", "chat", "unavailable")
PHONE_TECHS = ("PJSIP", "SIP", "IAX2", "DAHDI")
MAX_REASON = 60
RATE_WINDOW = 60  # seconds: ACTION_RATE counts the actions of a minute
ORIGINATE_TIMEOUT = "30000"  # ms the actor's own phone may ring before Originate gives up

# The PBX's error texts (main/manager.c) as a person reads them.
PBX_WORDS = {
    "Channel specified does not exist": N_("The call ended before the PBX could act on it."),
    "Transfer not permitted": N_("The PBX does not allow this transfer."),
    "Transfer invalid": N_("The PBX cannot transfer this call."),
    "Transfer failed": N_("The transfer failed."),
    "Originate failed": N_("The PBX could not place the call."),
    "Permission denied": N_("The panel's AMI user may not do this: see the README, Acting from the panel."),
    "Interface not found": N_("You are not a member of any queue."),
}


NO_CALL = N_("You have no call to transfer.")


class Refused(Exception):
    def __init__(self, status: int, message: str, result: str = "refused", **values: object) -> None:
        self.said = Said(message, **values)
        super().__init__(str(self.said))
        self.status, self.result = status, result
        self.target = ""  # the extension asked for, once the form is read (the audit line)


@dataclass(frozen=True)
class Request_:
    """One checked request: who, what, on which extension (its snapshot JSON)."""

    user: User
    action: str
    target: ExtensionJSON | None
    form: FormData
    extensions: Mapping[str, ExtensionJSON]  # the hub's, to find each extension's phones
    queues: Mapping[str, QueueJSON]  # the hub's, to find the actor's member interfaces


class Actions:
    """The actions of one web process: its one action session, the rate counts per user."""

    def __init__(self, settings: Settings, session: ActionSession | None = None) -> None:
        self.settings = settings
        self.roles = dict(settings.action_roles)
        self.session = session or ActionSession(
            settings.ami_host,  # empty: the demo PBX, reached once it runs (runtime.running_collector)
            settings.ami_port,
            settings.ami_action_username,
            settings.ami_action_secret,
            settings.action_idle_timeout,
        )
        # Said at start, not at the first click: ACTIONS=on that can never act.
        if settings.auth_mode == "none" or (
            settings.auth_mode == "proxy" and not settings.proxy_extension_header
        ):
            log.warning(
                "ACTIONS=on needs a user's own extension (AUTH=users, or AUTH=proxy with "
                "PROXY_EXTENSION_HEADER): every action is refused"
            )
        if not settings.ami_action_secret and not settings.demo:
            log.warning("ACTIONS=on without AMI_ACTION_SECRET: the PBX will refuse the action user")

    def tile_controls(self, user: User | None) -> set[str]:
        """The actions a user's tiles offer (app.look): those their role allows that act on
        a colleague, when they have a phone of their own to act from; the server checks
        every one again when it is asked."""
        if user is None or not user.extension:
            return set()
        return set(self.roles.get(user.role, frozenset())) & set(TILE_ACTIONS)

    @property
    def routes(self) -> list[Route]:
        return [Route("/actions/{action}", self.endpoint, methods=["POST"])]

    async def close(self) -> None:
        await self.session.close()

    async def endpoint(self, request: Request) -> Response:
        raw_action = request.path_params["action"]
        action = raw_action if raw_action in ACTION_NAMES else "unknown"
        user: User = request.state.user
        target = ""
        try:
            checked = await self._check(request, action, user)
            target = checked.target["exten"] if checked.target else ""
            message = await self._do(checked)
            status, result = 200, "ok"
        except Refused as refused:
            status, result, message = refused.status, refused.result, refused.said
            target = refused.target
        except PbxUnreachable as error:
            status, result = 502, "pbx-error"
            message = Said(N_("Nothing was done: %(error)s."), error=str(error))
        audit.info(
            "user=%r role=%s action=%s target=%r result=%s from=%s: %s",
            user.name,
            user.role,
            clean_text(raw_action, 20),
            target,
            result,
            peer_of(request.scope),
            message,
        )
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.actions.labels(action, result).inc()
        words = message.in_(request_language(request.scope, self.settings.language))  # the actor's language
        html = f'<p class="action-result action-{result}">{escape(words)}</p>'
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    # --- the checks, in the order a refusal is cheapest ---

    async def _check(self, request: Request, action: str, user: User) -> Request_:
        if action == "unknown":
            raise Refused(404, N_("There is no such action."))
        if action not in self.roles.get(user.role, frozenset()):
            message = N_("Your role (%(role)s) may not %(action)s from the panel.")
            raise Refused(403, message, "forbidden", role=user.role, action=action)
        if not user.extension:
            message = N_("You have no extension of your own in the users file: no actions.")
            raise Refused(403, message, "forbidden")
        form = await request.form(max_files=0, max_fields=8, max_part_size=1024)
        sent, expected = form.get("csrf"), request.session.get("csrf")
        if (
            not isinstance(sent, str)
            or not isinstance(expected, str)
            or not hmac.compare_digest(sent, expected)
        ):
            raise Refused(
                403, N_("The form has expired or did not come from this panel: reload the page."), "csrf"
            )
        target = None
        asked = clean_text(str(form.get("target", "")), 20)
        try:
            await self._count(request, user.name)
            if action not in ("pause", "presence"):
                target = self._target(request, asked)
                if target["exten"] == user.extension:
                    raise Refused(400, N_("That is your own extension."))
        except Refused as refused:
            refused.target = asked
            raise
        hub = request.app.state.hub
        return Request_(user, action, target, form, hub.extensions, hub.queues)

    async def _count(self, request: Request, name: str) -> None:
        """ACTION_RATE a minute per user, counted in the store: with memcached, every web
        worker and host counts the same actions (one per process allowed N times the rate).
        A store that cannot count refuses the action: a limit that fails open is none."""
        try:
            count, left = await request.app.state.store.count(f"actions:{name}", RATE_WINDOW)
        except StoreError as error:
            raise Refused(
                503, N_("The panel cannot count your actions now: try again shortly."), "store-error"
            ) from error
        if count > self.settings.action_rate:
            raise Refused(429, N_("Too many actions: wait %(seconds)d s."), "rate-limited", seconds=left)

    def _target(self, request: Request, exten: str) -> ExtensionJSON:
        if not EXTEN_RE.fullmatch(exten):
            raise Refused(400, N_("Choose a colleague's extension."))
        extension = request.app.state.hub.find(exten, request.state.scope)
        if extension is None:
            # Out of scope and unknown say the same: the answer tells nothing of what is hidden.
            raise Refused(403, N_("Extension %(exten)s is not on your panel."), "forbidden", exten=exten)
        return extension

    # --- the actions ---

    async def _do(self, checked: Request_) -> Said:
        own = checked.user.extension
        assert own is not None
        target = checked.target
        device = _devices(checked.extensions, own)[0]
        if checked.action == "call":
            assert target is not None
            reply = await self.session.run(
                "Originate",
                Channel=device,
                Context=target["context"],
                Exten=target["exten"],
                Priority="1",
                CallerID=f'"{_caller_name(checked.user)}" <{own}>',
                Async="true",
                Timeout=ORIGINATE_TIMEOUT,
            )
            return _said(
                reply, Said(N_("Your phone rings: pick it up to call %(exten)s."), exten=target["exten"])
            )
        if checked.action in ("transfer", "attended"):
            assert target is not None
            # The collector's calls first (no round trip when it shows none), then the PBX's word.
            if not any(e["calls"] for e in checked.extensions.values() if e["exten"] == own):
                raise Refused(409, NO_CALL)
            mine = await self._own_channel(_devices(checked.extensions, own))
            name = "BlindTransfer" if checked.action == "transfer" else "Atxfer"
            reply = await self.session.run(
                name, Channel=mine, Context=target["context"], Exten=target["exten"]
            )
            done = (
                N_("Call transferred to %(exten)s.")
                if checked.action == "transfer"
                else N_("Consulting before the transfer to %(exten)s.")
            )
            return _said(reply, Said(done, exten=target["exten"]))
        if checked.action == "pickup":
            assert target is not None
            if target["state"] != "ringing":
                raise Refused(409, N_("Extension %(exten)s is not ringing."), exten=target["exten"])
            ringing = _devices(checked.extensions, target["exten"])[0]
            return await self._originate_app(device, "PickupChan", ringing, Said(N_("Picking up.")))
        if checked.action == "listen":
            assert target is not None
            if not target["calls"]:
                raise Refused(409, N_("Extension %(exten)s is not on a call."), exten=target["exten"])
            spied = _devices(checked.extensions, target["exten"])[0]
            listening = Said(N_("Your phone rings: listening in."))
            return await self._originate_app(device, "ChanSpy", f"{spied},qE", listening)
        if checked.action == "pause":
            paused = str(checked.form.get("paused", "true")) != "false"
            reason = clean_text(str(checked.form.get("reason", "")), MAX_REASON)
            interfaces = _member_interfaces(checked.queues, checked.extensions, own)
            if not interfaces:
                raise Refused(409, PBX_WORDS["Interface not found"])
            done = Said(N_("Paused in your queues.") if paused else N_("Back in your queues."))
            for interface in interfaces:  # without Queue: in every queue it serves
                fields = {"Interface": interface, "Paused": "true" if paused else "false"}
                if reason and paused:
                    fields["Reason"] = reason
                _said(await self.session.run("QueuePause", **fields), done)
            return done
        state = str(checked.form.get("state", ""))
        if state not in PRESENCES:
            raise Refused(400, N_("Choose a presence: %(choices)s."), choices=", ".join(PRESENCES))
        # The message is cleaned and its commas dropped: PRESENCE_STATE splits the value on them.
        message = clean_text(str(checked.form.get("message", "")), MAX_REASON).replace(",", " ")
        reply = await self.session.run(
            "Setvar", Variable=f"PRESENCE_STATE(CustomPresence:{own})", Value=f"{state},,{message}"
        )
        presence = Said(PRESENCE_LABELS[state])
        return _said(reply, Said(N_("Your presence is now: %(presence)s."), presence=presence))

    async def _originate_app(self, device: str, app: str, data: str, done: Said) -> Said:
        reply = await self.session.run(
            "Originate", Channel=device, Application=app, Data=data, Async="true", Timeout=ORIGINATE_TIMEOUT
        )
        return _said(reply, done)

    async def _own_channel(self, phones: list[str]) -> str:
        """The actor's answered, bridged channel now, as the PBX lists it (CoreShowChannels);
        Refused when there is none, or more than one (which call would be meant?)."""
        devices = set(phones)
        mine = [
            item["Channel"]
            for item in await self.session.items(LOOKUP[0])
            if channel_device(item.get("Channel", "")) in devices
            and item.get("ChannelStateDesc") == "Up"
            and item.get("BridgeId")
        ]
        if not mine:
            raise Refused(409, NO_CALL)
        if len(mine) > 1:
            raise Refused(409, N_("You are on more than one call: transfer it from your phone."))
        return mine[0]


def _devices(extensions: Mapping[str, ExtensionJSON], exten: str) -> list[str]:
    """The phones of an extension: the hint's phone devices (PJSIP/101&Custom:DND101 has
    PJSIP/101); a hint without one (Custom: lamps only) means the phone PJSIP/<exten>."""
    for extension in extensions.values():
        if extension["exten"] == exten:
            devices = extension["hint"].split(",")[0].split("&")
            phones = [d for d in devices if d.split("/")[0] in PHONE_TECHS]
            if phones:
                return phones
    return [f"PJSIP/{exten}"]


def _member_interfaces(
    queues: Mapping[str, QueueJSON], extensions: Mapping[str, ExtensionJSON], exten: str
) -> list[str]:
    """The queue member interfaces (PJSIP/100, Local/100@from-queue/n) the collector mapped
    to the extension `exten`, each once: never an interface from the form."""
    keys = {key for key, extension in extensions.items() if extension["exten"] == exten}
    found = (m["interface"] for q in queues.values() for m in q["members"] if m["extension"] in keys)
    return list(dict.fromkeys(found))


def _caller_name(user: User) -> str:
    # Goes inside the quotes of a CallerID: no quotes, angle brackets or line breaks.
    return re.sub(r'["<>\r\n]', "", clean_text(user.name, 40))


def _said(reply: Frame, done: Said) -> Said:
    """`done` when the PBX did it; else Refused, with the PBX's reason in words."""
    if reply.get("Response") == "Success":
        return done
    text = reply.get("Message", "").strip()
    if text in PBX_WORDS:
        raise Refused(502, PBX_WORDS[text], "pbx-error")
    if said_text := clean_text(text, 80):
        raise Refused(502, N_("The PBX said: %(text)s."), "pbx-error", text=said_text)
    raise Refused(502, N_("The PBX said: no."), "pbx-error")
