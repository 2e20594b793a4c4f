"""The in-process radio of the emulation: bumble controllers on one shared ``LocalLink``.

Every emulated peripheral and every gateway central gets its own ``FixedController`` on a
``BumbleLink``; ``serve_hci_tcp`` exposes one more controller on a TCP port for a central in
another process (``VV_BLE_TRANSPORT=bumble:tcp-client:HOST:PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, Transport
from bumble.transport.tcp_server import open_tcp_server_transport


class FixedController(Controller):
    """bumble's emulated controller with two HCI commands made to follow the specification.

    Stock bumble 0.0.236 answers LE Create Connection Cancel with success but keeps the
    connection pending and never sends the LE Connection Complete (status 0x02) the
    specification requires: bumble's own ``connect(timeout=...)`` then waits forever and
    every later connect is refused. Its HCI Reset keeps every link, so a central restarting
    over TCP would find its peripherals still connected, silent and not advertising.
    """

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # Scheduled so that it follows the Command Complete sent when this handler returns.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        # A reset drops every link silently for this host; peers see a link loss.
        for connection in list(self.le_connections.values()):
            with contextlib.suppress(core.InvalidArgumentError):
                connection.send_ll_control_pdu(
                    ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
                )
        self.le_connections.clear()
        self.pending_le_connection = None
        self.le_scan_enable = False
        return super().on_hci_reset_command(command)


class BumbleLink:
    """The shared in-process radio: a bumble ``LocalLink`` that controllers attach to.

    Every peripheral and every central gets its own ``FixedController``. ``serve_hci_tcp``
    exposes one more controller on a TCP port for a central in another process. Use it as
    an async context manager: ``close`` stops the TCP servers.
    """

    def __init__(self) -> None:
        self.local_link = LocalLink()
        self._served: list[tuple[Controller, Transport]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def attach_host(self, name: str) -> tuple[Controller, Host]:
        """A new controller on the link, and a bumble host driving it."""
        controller = FixedController(name, link=self.local_link)
        return controller, Host(controller, AsyncPipeSink(controller))

    def detach(self, controller: Controller) -> None:
        self.drop_links(controller)
        if controller in self.local_link.controllers:
            self.local_link.remove_controller(controller)

    def drop_links(
        self,
        controller: Controller,
        reason: int = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR,
    ) -> None:
        """Both ends lose every LE link of ``controller`` at once, as on a supervision time-out."""
        for connection in list(controller.le_connections.values()):
            peer = self.local_link.find_le_controller(connection.peer_address)
            controller.on_le_disconnected(connection, reason)
            if peer is not None and (
                peer_connection := peer.le_connections.get(connection.self_address)
            ):
                peer.on_le_disconnected(peer_connection, reason)

    async def serve_hci_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve one new controller over TCP; returns the spec a central opens with bumble."""
        transport = await open_tcp_server_transport(f"{host}:{port}")
        controller = FixedController(
            f"tcp-{len(self._served)}",
            host_source=transport.source,
            host_sink=transport.sink,
            link=self.local_link,
        )
        self._served.append((controller, transport))
        bound = transport.server.sockets[0].getsockname()  # type: ignore[attr-defined]
        return f"tcp-client:{bound[0]}:{bound[1]}"

    async def close(self) -> None:
        while self._served:
            controller, transport = self._served.pop()
            self.detach(controller)
            # bumble's tcp-server transport closes neither its server nor the client socket.
            server = transport.server  # type: ignore[attr-defined]
            client_socket = transport.sink.transport  # type: ignore[attr-defined]
            if client_socket is not None:
                client_socket.close()
            server.close()
            await server.wait_closed()
            await transport.close()
