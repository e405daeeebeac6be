"""Step (e) of deploy/check.sh: starts the control node on the host the way the
rendered unit would, and checks it (and the rendered nginx, PostgreSQL and
Redis configuration) for real.

Usage: host_run.py ROOT PARAMS_JSON

Services cannot run inside the chroot (no init system there), so:
- PostgreSQL and Redis are started from the root with their own tools
  (pg_ctlcluster, redis-server with the rendered redis.conf) on the test's free
  ports, then stopped again;
- the control node runs on the host: ExecStart and ExecStartPost are taken from
  the rendered /etc/systemd/system/dreamstream.service, the environment from
  the rendered EnvironmentFile. Paths in the command line that exist inside the
  root are prefixed with the root (the binary and --config). Two things differ
  from systemd: the process runs as root, not as User=dreamstream (that user
  exists only inside the root), DREAMSTREAM_DATA_DIR points at a fresh
  temporary directory instead of the StateDirectory systemd would create, and
  DREAMSTREAM_CLUSTER__TLS__{CA,CERT,KEY} (environment overrides of
  [cluster.tls]) and sslrootcert= in DATABASE_URL point at the certificate
  files inside the root. The listen
  addresses need no change: check.sh rendered free ports into cluster.toml;
- nginx from the root runs with the rendered site and proxies to it;
- the GPU node runs on the host the same way (ExecStart, Environment= and
  EnvironmentFile= of the rendered dreamstream-gpu-node.service, the
  [cluster.tls] paths prefixed with the root, %C replaced by a temporary
  directory), joins the control node over mutual TLS with the generated
  certificates and cookie, shows up in /api/cluster and leaves on SIGTERM.
"""

import json
import re
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from envfile import parse_env_file  # noqa: E402

root = Path(sys.argv[1])
params = json.loads(Path(sys.argv[2]).read_text())
failures: list[str] = []
started: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def in_root(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, **kw)


def unit_directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def host_path(arg: str) -> str:
    """An absolute path that exists inside the root, as seen from the host."""
    if arg.startswith("/") and (root / arg.lstrip("/")).exists():
        return str(root / arg.lstrip("/"))
    return arg


def http_get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, dict]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)


pg_version = "15"
db_port, redis_port = params["common_db_port"], params["common_redis_port"]
https_port, http_port = params["control_node_proxy_https_port"], params["control_node_proxy_http_port"]
redis_pw = (Path(params["secrets_dir"]) / "redis_password").read_text().strip()
proc = gproc = None
log_path = Path(params["work_dir"]) / "dreamstream-host.log"
try:
    print("services from the root (PostgreSQL, Redis)")
    r = in_root("pg_ctlcluster", "--skip-systemctl-redirect", pg_version, "main", "start")
    check(r.returncode == 0, f"PostgreSQL {pg_version} starts with the rendered configuration {r.stderr.strip()}")
    if r.returncode == 0:
        started.append("postgres")
    r = subprocess.run(["chroot", "--userspec=redis:redis", str(root), "redis-server", "/etc/redis/redis.conf",
                        "--daemonize", "yes"], capture_output=True, text=True)
    check(r.returncode == 0, "redis-server starts with the rendered redis.conf")
    if r.returncode == 0:
        started.append("redis")
    pong = ""
    for _ in range(50):
        pong = in_root("redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", redis_pw, "ping").stdout.strip()
        if pong == "PONG":
            break
        time.sleep(0.1)
    check(pong == "PONG", "Redis answers PING with the generated password")
    noauth = in_root("redis-cli", "-p", str(redis_port), "ping").stdout.strip()
    check(noauth.startswith("NOAUTH"), f"Redis refuses clients without the password ({noauth})")

    print("control node from the rendered unit and environment file")
    unit = unit_directives(root / "etc/systemd/system/dreamstream.service")
    exec_start = [host_path(a) for a in shlex.split(unit["ExecStart"][0])]
    exec_start_post = shlex.split(unit["ExecStartPost"][0])
    env_file = unit["EnvironmentFile"][0]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env.update(parse_env_file(Path(host_path(env_file))))
    # sslrootcert= in DATABASE_URL names the cluster CA inside the root.
    env["DATABASE_URL"] = re.sub(r"(sslrootcert=)([^&]+)", lambda m: m.group(1) + host_path(m.group(2)), env.get("DATABASE_URL", ""))
    data_dir = tempfile.mkdtemp(prefix="dreamstream-data-", dir=params["work_dir"])
    env["DREAMSTREAM_DATA_DIR"] = data_dir
    config = tomllib.loads((root / "etc/dreamstream/cluster.toml").read_text())
    for key, path in config.get("cluster", {}).get("tls", {}).items():
        env[f"DREAMSTREAM_CLUSTER__TLS__{key.upper()}"] = host_path(path)
    print(f"  ExecStart (host paths): {shlex.join(exec_start)}")
    print(f"  EnvironmentFile: {env_file} ({', '.join(sorted(env))}); DREAMSTREAM_DATA_DIR={data_dir}")
    log = open(log_path, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(exec_start, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    post = subprocess.run(exec_start_post, capture_output=True, text=True, timeout=150)
    check(post.returncode == 0, f"the unit's ExecStartPost readiness poll succeeds ({time.monotonic() - t0:.1f} s after ExecStart)"
          + ("" if post.returncode == 0 else f": {post.stderr.strip()}"))
    check(proc.poll() is None, "the control node is running")
    base = f"http://{params['control_node_listen']}"
    status, body, _ = http_get(base + "/healthz")
    check(status == 200 and json.loads(body or "{}").get("status") == "ok", f"GET /healthz -> {status} {body.strip()}")
    status, body, _ = http_get(base + "/readyz")
    check(status == 200, f"GET /readyz -> {status} {body.strip()[:200]} (PostgreSQL from DATABASE_URL and a worker)")

    print("nginx from the root in front of it")
    r = in_root("nginx")
    check(r.returncode == 0, f"nginx starts with the rendered site {r.stderr.strip()}")
    if r.returncode == 0:
        started.append("nginx")
    cert = Path(params["secrets_dir"]) / "pki" / "proxy-dreamstream-test.crt"
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False  # the certificate names "localhost"; we connect to 127.0.0.1
    status, body, _ = http_get(f"https://127.0.0.1:{https_port}/healthz", ctx)
    check(status == 200 and "ok" in body, f"GET https://…:{https_port}/healthz through nginx (TLS, generated certificate) -> {status}")
    status, _, headers = http_get(f"http://127.0.0.1:{http_port}/healthz")
    check(status == 301 and headers.get("Location") == f"https://127.0.0.1:{https_port}/healthz",
          f"plain HTTP redirects to HTTPS -> {status} {headers.get('Location')}")
    status, body, _ = http_get(f"https://127.0.0.1:{https_port}/metrics", ctx)
    check(status == 200, f"/metrics through nginx from loopback -> {status}")
    with socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        s.sendall((f"GET /ws/viewer/deploy_check HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + 10
        # The handshake, then the first message: there is no such channel.
        while b'"no_such_channel"' not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    check(" 101 " in status_line + " " and b"s3pplmbitxaq9kygzzhzrbk+xoo=" in data.lower(),
          f"WebSocket upgrade through nginx (seed protocol /ws/viewer/{{id}}) -> {status_line}")
    check(b'"no_such_channel"' in data, "the first WebSocket message comes through nginx: {\"type\":\"error\",\"code\":\"no_such_channel\", ...}")

    print("GPU node from its rendered unit and environment file, joining over mutual TLS")
    gunit = unit_directives(root / "etc/systemd/system/dreamstream-gpu-node.service")
    gexec = [host_path(a) for a in shlex.split(gunit["ExecStart"][0])]
    genv = {"PATH": env["PATH"], "LANG": "C.UTF-8"}
    for assignment in gunit.get("Environment", []):
        key, _, value = assignment.partition("=")
        genv[key] = value.replace("%C", str(Path(params["work_dir"]) / "cache"))
    genv.update(parse_env_file(Path(host_path(gunit["EnvironmentFile"][0]))))
    gconfig = tomllib.loads((root / "etc/dreamstream/gpu-node.toml").read_text())
    for key, path in gconfig.get("cluster", {}).get("tls", {}).items():
        genv[f"DREAMSTREAM_CLUSTER__TLS__{key.upper()}"] = host_path(path)
    print(f"  ExecStart (host paths): {shlex.join(gexec)}")
    gpu_log = open(Path(params["work_dir"]) / "gpu-node-host.log", "w")
    gproc = subprocess.Popen(gexec, env=genv, stdout=gpu_log, stderr=subprocess.STDOUT, cwd=data_dir)
    worker = f'"{gconfig["gpu_node"]["name"]}/worker-0"'
    joined, body, t0 = False, "", time.monotonic()
    while time.monotonic() - t0 < 60 and gproc.poll() is None:
        status, body, _ = http_get(base + "/api/cluster")
        if status == 200 and worker in body:
            joined = True
            break
        time.sleep(0.5)
    check(joined, f"the control node lists the GPU node's worker {worker} ({time.monotonic() - t0:.1f} s)"
          + ("" if joined else f"; /api/cluster: {body[:300]}; gpu-node exit code {gproc.poll()}"))
    t0 = time.monotonic()
    gproc.send_signal(signal.SIGTERM)
    try:
        code = gproc.wait(timeout=50)
        check(code == 0, f"SIGTERM: the GPU node drained and exited with {code} in {time.monotonic() - t0:.1f} s")
    except subprocess.TimeoutExpired:
        gproc.kill()
        check(False, "SIGTERM: the GPU node exits within 50 s")
    gone = False
    for _ in range(40):
        status, body, _ = http_get(base + "/api/cluster")
        if status == 200 and worker not in body:
            gone = True
            break
        time.sleep(0.25)
    check(gone, "the control node drops the stopped GPU node's worker")

    print("graceful stop")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=35)
        check(code == 0, f"SIGTERM: the control node drained and exited with 0 in {time.monotonic() - t0:.1f} s")
    except subprocess.TimeoutExpired:
        check(False, "SIGTERM: the control node exits within 35 s")
finally:
    for p in (gproc, proc):
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    if "nginx" in started:
        in_root("nginx", "-s", "quit")
        time.sleep(0.5)
    if "redis" in started:
        in_root("redis-cli", "-p", str(redis_port), "--no-auth-warning", "-a", redis_pw, "shutdown", "nosave")
    if "postgres" in started:
        in_root("pg_ctlcluster", "--skip-systemctl-redirect", pg_version, "main", "stop", "--", "-m", "fast")

if failures:
    print(f"\n{len(failures)} check(s) failed (logs: {params['work_dir']}/*-host.log):", *failures, sep="\n  ")
    for log_file in sorted(Path(params["work_dir"]).glob("*-host.log")):
        print(f"\n--- {log_file.name} (end)\n" + log_file.read_text()[-3000:])
    sys.exit(1)
print("\nthe control node served from the rendered unit and environment file")
