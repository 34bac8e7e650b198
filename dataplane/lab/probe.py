"""Traffic ends of the lab: run inside a namespace as `python probe.py serve|tcp|udp ...`.

Standard library only and run by file path, so it starts fast in any namespace. A server
answers every TCP connection and UDP datagram with one line, `NAME CLIENT_IP CLIENT_PORT`, so a
client sees which backend answered and which source address that backend saw (masquerade or
preservation). Clients print one JSON object per attempt:
    {"ok": true, "server": "pod-1-1", "seen": "10.244.2.10", "ms": 0.8}
    {"ok": false, "error": "ECONNREFUSED", "ms": 0.3}
"""
from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import sys
import threading
import time


def serve(name: str, bind: str, tcp_ports: list[int], udp_ports: list[int]) -> None:
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the threads start: they inherit it
    threads = [threading.Thread(target=_tcp_server, args=(name, bind, p), daemon=True) for p in tcp_ports]
    threads += [threading.Thread(target=_udp_server, args=(name, bind, p), daemon=True) for p in udp_ports]
    for t in threads:
        t.start()
    signal.sigwait(stop)


def _tcp_server(name: str, bind: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(4096)  # bursts of connections (the 1,000-connection test) must not overflow it
    while True:
        conn, (ip, cport) = s.accept()
        with conn:
            try:
                conn.sendall(f"{name} {ip} {cport}\n".encode())
            except OSError:
                pass


def _udp_server(name: str, bind: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, port))
    while True:
        _, (ip, cport) = s.recvfrom(2048)
        s.sendto(f"{name} {ip} {cport}\n".encode(), (ip, cport))


def _answer(data: bytes, start: float) -> dict:
    parts = data.decode(errors="replace").split()
    if len(parts) != 3:
        return {"ok": False, "error": f"unexpected answer {data[:60]!r}", "ms": _ms(start)}
    return {"ok": True, "server": parts[0], "seen": parts[1], "ms": _ms(start)}


def _failure(exc: OSError, start: float) -> dict:
    if isinstance(exc, TimeoutError):
        return {"ok": False, "error": "timeout", "ms": _ms(start)}
    return {"ok": False, "error": errno.errorcode.get(exc.errno or 0, str(exc)), "ms": _ms(start)}


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


def tcp(host: str, port: int, timeout: float) -> dict:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
        return _answer(data, start)
    except OSError as exc:
        return _failure(exc, start)


def udp(host: str, port: int, timeout: float) -> dict:
    start = time.monotonic()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))  # connected: an ICMP unreachable surfaces as ECONNREFUSED
            s.send(b"ping\n")
            return _answer(s.recv(2048), start)
    except OSError as exc:
        return _failure(exc, start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="answer TCP and UDP with NAME CLIENT_IP CLIENT_PORT")
    s.add_argument("--name", required=True)
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--tcp", type=int, action="append", default=[])
    s.add_argument("--udp", type=int, action="append", default=[])
    for proto in ("tcp", "udp"):
        c = sub.add_parser(proto, help=f"{proto.upper()} requests; one JSON line per attempt")
        c.add_argument("host")
        c.add_argument("port", type=int)
        c.add_argument("--count", type=int, default=1)
        c.add_argument("--timeout", type=float, default=2.0)
        c.add_argument("--retry-for", type=float, default=0.0, metavar="SECONDS",
                       help="repeat the first attempt until it succeeds or this long has passed "
                            "(a dataplane that is still attaching)")
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.name, args.bind, args.tcp, args.udp)
        return 0
    request = tcp if args.cmd == "tcp" else udp
    deadline = time.monotonic() + args.retry_for
    result = request(args.host, args.port, args.timeout)
    while not result["ok"] and time.monotonic() < deadline:
        time.sleep(0.2)
        result = request(args.host, args.port, args.timeout)
    print(json.dumps(result), flush=True)
    if result.get("error") == "timeout":
        return 0  # a path that is down even after retrying: more attempts only add timeouts
    for _ in range(args.count - 1):
        print(json.dumps(request(args.host, args.port, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
