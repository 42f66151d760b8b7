"""An emulated home link on loopback: a throttling TCP proxy (asyncio), for benchmarks.

Run: python bench/link.py [--up-mbit 100] [--down-mbit 300] [--delay-ms 20] [--routes N]
It listens on N loopback ports and prints them on one line; then it reads one
line of N targets (``host:port`` each, the same order) from stdin, relays each
port's connections to its target, and stops when stdin closes. (Targets come
after the ports so a server can be started with the proxy's address in it.)
Each further line on stdin is answered with the bytes relayed so far: up, down.

"Up" is what a client sends towards the target (the user's uplink), "down" the
answers. Each direction is one token bucket shared by every connection (one
link, not one per connection; a burst of ``BURST`` bytes), and every chunk is
delivered ``--delay-ms`` after it left the bucket, so a connection carries up to
the bandwidth-delay product in flight, as TCP over a long fat pipe would. A new
connection waits one round trip before its first byte (TCP's handshake).

Not modelled: TCP slow start and congestion control (a connection runs at the
link's rate from its first byte), the TLS handshake (Modal's API and blob
store speak HTTPS: one or two more round trips per new connection), loss,
jitter, and a router's queue (the bucket holds nothing back beyond ``BURST``).

``Link`` starts it as a subprocess (its own process, so the GIL of the process
under test never delays the link) and ``Link.sanity()`` times bytes through it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CHUNK = 64 << 10   # bytes read at a time (5 ms at 100 Mbit/s)
BURST = 64 << 10   # bytes the bucket may hold


class Bucket:
    """One direction of the link: bytes leave at ``rate`` bytes/s, whoever sends them."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.stamp = rate, float(BURST), time.monotonic()
        self.total = 0  # bytes that went through, every connection

    async def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        self.total += n
        if self.tokens < 0:  # in debt: this chunk has left the link once the debt is paid
            await asyncio.sleep(-self.tokens / self.rate)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bucket: Bucket, delay: float) -> None:
    """Relay one direction: through the bucket, then ``delay`` later out the other side."""
    in_flight: asyncio.Queue = asyncio.Queue(maxsize=64)  # a slow reader on the far side holds the sender back

    async def deliver() -> None:
        while True:
            due, data = await in_flight.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data or delivering.done():
                break
            await bucket.take(len(data))
            await in_flight.put((time.monotonic() + delay, data))
        await in_flight.put((time.monotonic() + delay, None))
        await delivering
    except (ConnectionError, OSError):
        pass
    finally:
        delivering.cancel()


async def _serve(args: argparse.Namespace) -> None:
    up, down = Bucket(args.up_mbit * 1e6 / 8), Bucket(args.down_mbit * 1e6 / 8)
    delay = args.delay_ms / 1e3
    loop = asyncio.get_running_loop()
    targets: asyncio.Future = loop.create_future()

    def handler(index: int):
        async def handle(client_reader, client_writer) -> None:
            try:
                await relay(index, client_reader, client_writer)
            except asyncio.CancelledError:  # the link is stopping
                pass
        return handle

    async def relay(index: int, client_reader, client_writer) -> None:
        await asyncio.sleep(2 * delay)  # SYN, SYN-ACK
        host, port = (await asyncio.shield(targets))[index]
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(client_reader, server_writer, up, delay),
                             _pump(server_reader, client_writer, down, delay), return_exceptions=True)
        for writer in (client_writer, server_writer):
            writer.close()

    servers = [await asyncio.start_server(handler(i), "127.0.0.1", 0) for i in range(args.routes)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    targets.set_result([(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in line.split()])
    while await loop.run_in_executor(None, sys.stdin.readline):  # until the owner closes stdin
        print(up.total, down.total, flush=True)  # any line asks for the bytes so far, up and down
    for server in servers:
        server.close()


class Link:
    """``bench/link.py`` as a subprocess: ``ports`` now, ``route(targets)`` once the targets listen."""

    def __init__(self, routes: int, *, up_mbit: float = 100, down_mbit: float = 300, delay_ms: float = 20) -> None:
        self.up_mbit, self.down_mbit, self.delay_ms = up_mbit, down_mbit, delay_ms
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), f"--routes={routes}", f"--up-mbit={up_mbit}",
             f"--down-mbit={down_mbit}", f"--delay-ms={delay_ms}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ports = [int(p) for p in self.process.stdout.readline().split()]

    def route(self, *targets: str) -> None:
        self.process.stdin.write(" ".join(targets) + "\n")
        self.process.stdin.flush()

    def bytes(self) -> tuple[int, int]:
        """Bytes that crossed the link so far (every connection, protocol overhead included): up, down."""
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        up, down = self.process.stdout.readline().split()
        return int(up), int(down)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @staticmethod
    def sanity(mib: int = 32, routes: int = 1, **link: float) -> dict[str, float]:
        """Seconds for a 1-byte round trip, to push ``mib`` MiB up and to pull it down, through a fresh link."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            proxy = Link(routes, **link)
            proxy.route(f"127.0.0.1:{listener.getsockname()[1]}")
            payload = b"\0" * (mib << 20)
            try:
                client = socket.create_connection(("127.0.0.1", proxy.ports[0]))
                server, _ = listener.accept()
                for s in (client, server):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

                def ping() -> float:
                    began = time.perf_counter()
                    client.sendall(b"?")
                    server.recv(1)
                    server.sendall(b"!")
                    client.recv(1)
                    return time.perf_counter() - began

                rtt = min(ping() for _ in range(5))

                def move(sender: socket.socket, receiver: socket.socket) -> float:
                    began = time.perf_counter()
                    thread = threading.Thread(target=sender.sendall, args=(payload,))
                    thread.start()
                    got = 0
                    while got < len(payload):
                        got += len(receiver.recv(1 << 20))
                    thread.join()
                    return time.perf_counter() - began

                up, down = move(client, server), move(server, client)
                client.close()
                server.close()
            finally:
                proxy.stop()
        return {"round_trip": rtt, "up": up, "down": down}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--up-mbit", type=float, default=100)
    parser.add_argument("--down-mbit", type=float, default=300)
    parser.add_argument("--delay-ms", type=float, default=20, help="one way, each direction")
    parser.add_argument("--routes", type=int, default=1)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
