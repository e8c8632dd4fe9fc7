"""A simulated PBX's boot, as Asterisk 22 does it after `core restart`: the manager takes
logins first, the dialplan's hints appear one by one, module actions answer once their
modules load, and FullyBooted comes last. Do not break: nothing here sends FullyBooted
before `finish_boot` (a login during a boot gets none, as in manager.c action_login)."""

from __future__ import annotations

import time

from app.sim.events import fully_booted
from app.sim.wire import CALL, SYSTEM, encode

MODULE_ACTIONS = frozenset(
    {"devicestatelist", "presencestatelist", "pjsipshowendpoint"}
    | {"queuestatus", "queuesummary", "queuepause", "queueadd", "queueremove", "queuepenalty"}
)


class Booting:
    """The boot part of `Pbx` (its base): needs its hints, `emit` and `_extension_event`."""

    booted: bool
    modules_loaded: bool
    _hints: dict[str, str]
    _loaded: set[str]
    _started_at: float
    _reloaded_at: float

    def fully_booted(self) -> bytes:
        """The FullyBooted a login gets: nothing while booting (manager.c action_login sends
        it only once ast_fully_booted)."""
        if not self.booted:
            return b""
        now = time.monotonic()
        return fully_booted(int(now - self._started_at), int(now - self._reloaded_at))

    def knows_action(self, name: str) -> bool:
        """Whether an action (lower case) is registered now: module ones only once loaded."""
        return self.modules_loaded or name not in MODULE_ACTIONS

    def begin_boot(self) -> None:
        """The PBX process starts again: no hints loaded, no modules, not booted; logins are
        taken already (the manager is up before the modules, as on Asterisk 22)."""
        self._loaded = set()
        self.modules_loaded = self.booted = False
        self._boot()

    def load_hints(self, count: int) -> None:
        """The dialplan's next `count` hints appear, each with its ExtensionStatus (as seen
        on Asterisk 22.10.1 after a restart: the hints arrived as events, one by one)."""
        for exten in [e for e in self._hints if e not in self._loaded][:count]:
            self._loaded.add(exten)
            self.emit(CALL, self._extension_event(exten))

    def load_modules(self) -> None:
        """res_manager_devicestate and the like load (priority 150): the dialplan's hints
        (pbx_config, 128) are all there by then, and the module actions answer."""
        self.load_hints(len(self._hints))
        self.modules_loaded = True

    def finish_boot(self) -> None:
        """FullyBooted to every session with `system`. Read from asterisk.c
        publish_fully_booted, not recorded: the JSON's keys go out in the order packed (jansson
        keeps it), Status first, unlike in the one a login gets."""
        self.load_modules()
        self.booted = True
        uptime = int(time.monotonic() - self._started_at)
        head = [("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")]
        self.emit(SYSTEM, encode([*head, ("Uptime", uptime), ("LastReload", uptime)]))

    def _boot(self) -> None:
        """The PBX process (re)starts: uptime and last reload count from now."""
        self._started_at = self._reloaded_at = time.monotonic()
