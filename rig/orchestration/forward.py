"""A TCP forward from the flash host's address to a device only the flash host reaches.

The virtual rig's devices listen on loopback addresses; the person at the desk
opens the flash host's address instead. Plain bytes both ways, so HTTP,
keep-alive and a product's websockets all pass unchanged.
"""

from __future__ import annotations

import asyncio
import threading

from rig.errors import InfraError


class TcpForward:
    """Listens on ``bind`` (a free port unless given) and connects each client to the target."""

    def __init__(self, bind: str, target_host: str, target_port: int, port: int = 0) -> None:
        self.bind, self.target = bind, (target_host, target_port)
        self.host, self.port = bind, port
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> TcpForward:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, self.bind, self.port), self._loop
        )
        try:
            self._server = future.result(timeout=10)
        except OSError as e:
            self.stop()
            raise InfraError(
                f"cannot listen on {self.bind}:{self.port}: {e.strerror}",
                where="hand-over",
                hint="set run.handover_bind in rig.yaml to an address of this host",
            ) from e
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
