"""Traffic ends of the soak test, run inside lab namespaces by file path (standard library only).

    python ends.py echo PORT                       line echo server
    python ends.py hold HOST PORT N SECONDS LOG    N long-lived connections, one line each per
                                                   second, every echo awaited (up to 20 s, for
                                                   dataplane restarts); a JSON summary to LOG
    python ends.py flood IFACE RATE SECONDS FILE   raw frames from FILE (length-prefixed) sent
                                                   round-robin on IFACE at RATE frames/s
"""
import json
import socket
import sys
import threading
import time


def echo(port):
    srv = socket.create_server(("0.0.0.0", port), reuse_port=True)

    def serve(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def hold(host, port, n, seconds, log):
    conns = [socket.create_connection((host, port), timeout=20) for _ in range(n)]
    sent = lost = 0
    errors = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not errors:
        for k, c in enumerate(conns):
            line = f"{k} {sent}\n".encode()
            try:
                c.sendall(line)
                got = b""
                while not got.endswith(b"\n"):
                    chunk = c.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed by peer")
                    got += chunk
                if got != line:
                    raise ConnectionError(f"echo {got!r} for {line!r}")
            except OSError as exc:
                lost += 1
                errors.append(f"connection {k}: {exc!r}")
            sent += 1
        time.sleep(1)
    with open(log, "w") as f:
        json.dump({"sent": sent, "lost": lost, "errors": errors}, f)


def flood(iface, rate, seconds, path):
    raw = open(path, "rb").read()
    frames, pos = [], 0
    while pos < len(raw):
        n = int.from_bytes(raw[pos:pos + 2], "big")
        frames.append(raw[pos + 2:pos + 2 + n])
        pos += 2 + n
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        t = time.monotonic()
        for _ in range(rate // 10):
            s.send(frames[k % len(frames)])
            k += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "echo":
        echo(int(args[0]))
    elif cmd == "hold":
        hold(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])
    elif cmd == "flood":
        flood(args[0], int(args[1]), float(args[2]), args[3])
