"""The console application: themes, keys, and the fleet it watches."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.theme import Theme

from lifsea_tui.api import OpsSession, OpsSessionRequest
from lifsea_tui.client.etcd import EtcdTarget, Store
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.netloop import NetworkLoop, new_event_loop
from lifsea_tui.tui import locations
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.screens.base import ShellClosed
from lifsea_tui.tui.screens.failed import FailedUnitsScreen
from lifsea_tui.tui.screens.fleet import FleetScreen
from lifsea_tui.tui.screens.node import NodeScreen
from lifsea_tui.tui.settings import DEFAULT_EVENTS_LIMIT
from lifsea_tui.tui.themes import CONSOLE_VARIABLES, load_themes

if TYPE_CHECKING:
    from lifsea_tui.tui.cast import Cast

DEFAULT_THEME = "lifsea-dark"
# Up to this many nodes the fleet follows every node's event stream; a larger fleet is polled only
# (a stream is a TLS websocket a node, held open).


class LifseaApp(App[None]):
    TITLE = "lifsea-tui"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("colon", "command_palette", "Commands", key_display=":", id="palette"),
        Binding("question_mark", "toggle_help", "Help", key_display="?", id="help"),
    ]

    def __init__(
        self,
        fleet: Fleet,
        *,
        read_only: bool = False,
        refresh_interval: float = 5.0,
        events_limit: int = DEFAULT_EVENTS_LIMIT,
        rollout_store: EtcdTarget | None = None,
        context: str | None = None,
        theme: str | None = None,
        keymap: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if keymap:
            self.set_keymap(keymap)
        self.theme_wanted = theme  # config.toml's; else the one last chosen
        if context:  # which fleet this is, as k9s shows its context: prod is not staging
            self.title = f"lifsea-tui · {context}"
        self.fleet = fleet
        self.net = NetworkLoop()
        self.rollout_store = Store(rollout_store) if rollout_store is not None else None
        self.read_only = read_only
        self.refresh_interval = refresh_interval
        self.events_limit = events_limit
        self.settings = locations.load_settings()
        self._colours: tuple[str, dict[str, str]] | None = None
        if read_only:
            self.sub_title = "read-only"

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text: most carry a node's words (errors, names), never markup."""
        super().notify(
            visible(message[:2000]), title=visible(title[:200]), severity=severity, timeout=timeout, markup=False
        )

    def format_title(self, title: str, sub_title: str) -> Content:
        return super().format_title(visible(title, keep_newlines=False), visible(sub_title, keep_newlines=False))

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(CONSOLE_VARIABLES)

    def colour(self, variable: str) -> str:
        """A console colour variable of the current theme, as a Rich style string."""
        if self._colours is None or self._colours[0] != self.theme:
            self._colours = (self.theme, self.get_css_variables())
        return self._colours[1].get(variable, "")

    def on_mount(self) -> None:
        themes, problems = load_themes(locations.SHIPPED_THEMES, locations.user_themes())
        for theme in themes:
            self.register_theme(theme)
        if problems:
            self.notify("Some themes were not loaded:\n" + "\n".join(problems), severity="warning", timeout=10)
        wanted = self.theme_wanted or self.settings.get("theme")
        if self.theme_wanted and self.theme_wanted not in self.available_themes:
            known = ", ".join(sorted(self.available_themes))
            self.notify(f"config.toml: no theme {self.theme_wanted!r} (known: {known})", severity="warning", timeout=10)
        self.theme = wanted if isinstance(wanted, str) and wanted in self.available_themes else DEFAULT_THEME
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.push_screen(FleetScreen())

    def _remember_theme(self, theme: Theme) -> None:
        if self.settings.get("theme") != theme.name:
            self.settings["theme"] = theme.name
            try:
                locations.save_settings(self.settings)
            except OSError as error:
                self.notify(f"cannot save settings: {error}", severity="warning")

    # -- where a screen may send the person: the app knows every screen, screens know none ---------------
    # The screens off the way to the first painted fleet (a terminal emulator, runbooks, the player) are
    # imported when first opened: ~3.4 MB and ~50 ms less at start, each first open ≤ 30 ms.

    def open_node(self, name: str, tab: str | None = None) -> None:
        self.push_screen(NodeScreen(name, tab))

    def open_failed_units(self) -> None:
        self.push_screen(FailedUnitsScreen())

    def open_fleet_debug(self, nodes: list[str]) -> None:
        from lifsea_tui.tui.screens.debug import FleetDebugScreen

        self.push_screen(FleetDebugScreen(nodes))

    def open_debug(self, node: str, start: str | None = None) -> None:
        from lifsea_tui.tui.screens.debug import DebugScreen

        self.push_screen(DebugScreen(node, start))

    def open_logs(self, node: str, unit: str | None = None) -> None:
        from lifsea_tui.tui.screens.logs import LogsScreen

        self.push_screen(LogsScreen(node, unit))

    def open_shell(
        self,
        node: str,
        session: OpsSession | OpsSessionRequest,
        *,
        hints: list[str] | None = None,
        hint_title: str = "",
        then: Callable[[ShellClosed | None], None] | None = None,
    ) -> None:
        from lifsea_tui.tui.screens.shell import ShellScreen

        screen = ShellScreen(node, self.fleet.client(node), session, hints=hints, hint_title=hint_title)
        self.push_screen(screen, then)

    def open_player(self, recording: Cast, name: str) -> None:
        from lifsea_tui.tui.player import PlayerScreen

        self.push_screen(PlayerScreen(recording, name))

    def open_rollouts(self, nodes: list[str] | None = None) -> None:
        from lifsea_tui.tui.screens.rollouts import RolloutsScreen

        self.push_screen(RolloutsScreen(nodes))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette (`:`): the screen's own actions, the console's screens, and every node by name
        (found by typing, not listed: a fleet can be a thousand)."""
        yield from super().get_system_commands(screen)
        for active in screen.active_bindings.values():
            binding = active.binding
            if active.enabled and binding.description and active.node is not self and binding.id != "node-back":
                key = self.get_key_display(binding)
                yield SystemCommand(
                    binding.description, f"{key}: on this screen", partial(self.run_action, binding.action, active.node)
                )
        yield SystemCommand("Rollouts", "Fleet rollouts: start one, watch it, pause, roll back", self.open_rollouts)
        yield SystemCommand("Failed units", "Every failed unit of the fleet, by node", self.open_failed_units)
        if not isinstance(screen, FleetScreen):
            yield SystemCommand("Fleet", "Back to the fleet", self._to_fleet)
        for name in self.fleet.snapshots:
            yield SystemCommand(f"node {name}", f"open {name}", partial(self.open_node, name), discover=False)

    def _to_fleet(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, FleetScreen):
            self.pop_screen()

    def action_toggle_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def on_unmount(self) -> None:
        await self.net.cancel_all()
        await self.net.run(self.fleet.aclose())
        if self.rollout_store is not None:
            await self.net.run(self.rollout_store.aclose())
        self.net.stop()


def binding_ids() -> set[str]:
    """Every binding id of the console's app, screens and widgets (what a keymap may name): this module
    imports them all."""
    found: set[str] = set()
    pending: list[type] = [DOMNode]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__module__.startswith("lifsea_tui.tui"):
            continue
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding) and binding.id:
                found.add(binding.id)
    return found


def raise_open_file_limit() -> None:
    """A keep-alive connection per node: a large fleet needs more descriptors than the usual 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def console_main(args: argparse.Namespace) -> int:
    """`lifsea-tui` with no command: the console on the nodes the flags, the config file or the lab name."""
    import gc
    import sys

    from lifsea_tui.client import inventory
    from lifsea_tui.client.heads import AuditHeads
    from lifsea_tui.tui import settings
    from lifsea_tui.tui.sources import fleet_source

    try:
        chosen = settings.load(
            locations.config_file(), binding_ids
        )  # the user's own file first: its mistakes are theirs
        source = fleet_source(args)
    except (inventory.InventoryError, settings.SettingsError) as error:
        print(visible(f"lifsea-tui: {error}"), file=sys.stderr)
        return 2
    locations.start_console_log()  # what fails behind the screen goes there, never onto it
    raise_open_file_limit()
    # Everything built so far lives as long as the console: keep the collector from walking it again, and
    # collect less often. Measured on a 1,000-node fleet: key-to-screen p99 348 ms before, 122 ms after.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    LifseaApp(
        Fleet(source.targets, heads=AuditHeads(locations.audit_heads_file(), source.scope)),
        read_only=chosen.read_only if args.read_only is None else args.read_only,
        refresh_interval=chosen.refresh if args.refresh is None else args.refresh,
        events_limit=chosen.events_limit if args.events_limit is None else args.events_limit,
        rollout_store=source.store,
        context=source.label,
        theme=chosen.theme,
        keymap=chosen.keymap,
    ).run(loop=new_event_loop())
    return 0
