"""Checks a Debian root that site.yml was applied to (deploy/check.sh, step d).

Usage: verify_root.py ROOT REPO PARAMS_JSON VAULT_YAML

PARAMS_JSON: the extra vars check.sh passed (ports, binary sources) plus
"secrets_dir". VAULT_YAML: the decrypted test vault. Exits non-zero and lists
every failed check.
"""

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from envfile import parse_env_file  # noqa: E402

root, repo = Path(sys.argv[1]), Path(sys.argv[2])
params = json.loads(Path(sys.argv[3]).read_text())
vault = yaml.safe_load(Path(sys.argv[4]).read_text())
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def passwd(path: str) -> dict[str, list[str]]:
    """name -> fields of the root's /etc/passwd or /etc/group."""
    rows = {}
    for line in (root / path.lstrip("/")).read_text().splitlines():
        if line and not line.startswith("#"):
            fields = line.split(":")
            rows[fields[0]] = fields
    return rows


def mode_owner(path: str) -> tuple[int, str, str]:
    st = (root / path.lstrip("/")).stat()
    users = {int(f[2]): n for n, f in passwd("/etc/passwd").items()}
    groups = {int(f[2]): n for n, f in passwd("/etc/group").items()}
    return stat.S_IMODE(st.st_mode), users.get(st.st_uid, str(st.st_uid)), groups.get(st.st_gid, str(st.st_gid))


def expect_file(path: str, mode: int, owner: str, group: str) -> None:
    p = root / path.lstrip("/")
    if not p.exists():
        check(False, f"{path} exists")
        return
    got = mode_owner(path)
    check(got == (mode, owner, group), f"{path} is {oct(mode)} {owner}:{group} (got {oct(got[0])} {got[1]}:{got[2]})")


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


print("users")
users, groups = passwd("/etc/passwd"), passwd("/etc/group")
u = users.get("dreamstream")
check(u is not None, "user dreamstream exists")
if u:
    check(int(u[2]) < 1000, f"dreamstream is a system user (uid {u[2]})")
    check(u[6] == "/usr/sbin/nologin", "dreamstream has no login shell")
    check(groups.get("dreamstream", [None, None, None])[2] == u[3], "dreamstream's primary group is dreamstream")

print("binaries")
for name, src in (("dreamstream", params["control_node_binary_src"]), ("gpu-node", params["gpu_node_binary_src"])):
    expect_file(f"/usr/local/bin/{name}", 0o755, "root", "root")
    installed = root / "usr/local/bin" / name
    check(installed.exists() and sha256(installed) == sha256(Path(src)), f"/usr/local/bin/{name} is the built binary {src}")

print("configuration files")
expect_file("/etc/dreamstream", 0o750, "root", "dreamstream")
expect_file("/etc/dreamstream/cluster.toml", 0o640, "root", "dreamstream")
expect_file("/etc/dreamstream/gpu-node.toml", 0o640, "root", "dreamstream")
expect_file("/etc/dreamstream/dreamstream.env", 0o600, "root", "root")
expect_file("/etc/dreamstream/gpu-node.env", 0o600, "root", "root")
expect_file("/etc/dreamstream/tls/ca.crt", 0o644, "root", "dreamstream")
expect_file("/etc/dreamstream/tls/node.crt", 0o644, "root", "dreamstream")
expect_file("/etc/dreamstream/tls/node.key", 0o640, "root", "dreamstream")

print("cluster.toml (control node)")
default = tomllib.loads((repo / "cluster.toml").read_text())
cfg = tomllib.loads((root / "etc/dreamstream/cluster.toml").read_text())


def same_shape(cfg: dict, sections: list[str | None], name: str) -> None:
    """Every key of the repository's cluster.toml in `sections` (None: the
    top level) is in `cfg`, with the same type."""
    for section in sections:
        ref = default if section is None else default[section]
        got = cfg if section is None else cfg.get(section, {})
        for key, value in ref.items():
            if isinstance(value, dict):
                continue
            where = key if section is None else f"[{section}] {key}"
            check(type(got.get(key)) is type(value), f"{name}: {where} as in the repository's cluster.toml ({type(value).__name__})")


same_shape(cfg, [None] + [s for s, v in default.items() if isinstance(v, dict) and s != "gpu_node"], "cluster.toml")
check(cfg.get("listen") == params["control_node_listen"], f"listen = {params['control_node_listen']}")
check(cfg.get("data_dir") == "/var/lib/dreamstream", "data_dir = /var/lib/dreamstream (the unit's StateDirectory)")
check(cfg.get("local_workers") == 1, "local_workers = 1 (test inventory)")
check(cfg.get("cluster_listen") == params["control_node_cluster_listen"], "cluster_listen from the inventory")
public_url = f"https://localhost:{params['control_node_proxy_https_port']}"
check(cfg.get("public_url") == public_url, f"public_url = {public_url} (nginx's HTTPS address)")
check(cfg.get("trusted_proxies") == ["127.0.0.1", "::1"], "trusted_proxies = the nginx in front (127.0.0.1, ::1)")
packs = cfg.get("credits", {}).get("packs", [])
check(bool(packs) and all(isinstance(p, dict) and p.get("credits", 0) > 0 and ("price_id" in p or {"price_cents", "currency"} <= p.keys())
                          for p in packs),
      f"[[credits.packs]]: {len(packs)} packs, each with credits and price_cents + currency or price_id")
check(cfg.get("cluster", {}).get("require_tls") is True, "[cluster] require_tls = true")
tls = cfg.get("cluster", {}).get("tls", {})
check(tls == {"ca": "/etc/dreamstream/tls/ca.crt", "cert": "/etc/dreamstream/tls/node.crt", "key": "/etc/dreamstream/tls/node.key"},
      "[cluster.tls] ca, cert, key point at the installed files")

print("gpu-node.toml")
gcfg = tomllib.loads((root / "etc/dreamstream/gpu-node.toml").read_text())
same_shape(gcfg, ["gpu_node", "cluster"], "gpu-node.toml")
gn = gcfg.get("gpu_node", {})
check(gn.get("control") == f"127.0.0.1:{params['common_cluster_port']}", "[gpu_node] control is the control node's cluster address")
check(gn.get("name") == "dreamstream-test", "[gpu_node] name is the inventory name")
check(gn.get("tls_server_name") == "dreamstream-test", "[gpu_node] tls_server_name is the control node's inventory name")
check(gcfg.get("cluster", {}).get("max_frame_bytes") == cfg.get("cluster", {}).get("max_frame_bytes"),
      "[cluster] max_frame_bytes is the same on both ends")
check(gcfg.get("cluster", {}).get("tls") == tls, "[cluster.tls] as on the control node")

print("environment files")
env = parse_env_file(root / "etc/dreamstream/dreamstream.env")
genv = parse_env_file(root / "etc/dreamstream/gpu-node.env")
db = urlsplit(env.get("DATABASE_URL", ""))
check(db.scheme == "postgres", "DATABASE_URL is a postgres:// URL")
check(unquote(db.password or "") == vault["vault_dreamstream_db_password"], "DATABASE_URL carries the password from the vault")
check(db.port == params["common_db_port"] and db.hostname == "127.0.0.1", f"DATABASE_URL points at 127.0.0.1:{params['common_db_port']}")
check(db.path == "/dreamstream" and db.query == "sslmode=verify-full&sslrootcert=/etc/dreamstream/tls/ca.crt",
      "DATABASE_URL names database dreamstream, sslmode=verify-full against the cluster CA")
redis_url = urlsplit(env.get("REDIS_URL", ""))
redis_pw = (Path(params["secrets_dir"]) / "redis_password").read_text().strip()
check(redis_url.scheme == "redis" and unquote(redis_url.password or "") == redis_pw, "REDIS_URL carries the generated Redis password")
check(redis_url.port == params["common_redis_port"], f"REDIS_URL port {params['common_redis_port']}")
cookie = env.get("DREAMSTREAM_CLUSTER_COOKIE", "")
check(len(cookie) >= 32, "DREAMSTREAM_CLUSTER_COOKIE has at least 32 characters")
check(cookie == (Path(params["secrets_dir"]) / "cluster_cookie").read_text().strip(), "the cookie is the one generated on the controller")
check(genv.get("DREAMSTREAM_CLUSTER_COOKIE") == cookie, "the GPU node has the control node's cookie")
session_key = env.get("DREAMSTREAM_SESSION_KEY", "")
check(len(session_key) == 128 and all(c in "0123456789abcdef" for c in session_key),
      "DREAMSTREAM_SESSION_KEY: 64 bytes as hex")
check(session_key == (Path(params["secrets_dir"]) / "session_key").read_text().strip(),
      "the session key is the one generated on the controller")
check("DREAMSTREAM_SESSION_KEY" not in genv, "the GPU node gets no session key")
check(env.get("STRIPE_SECRET_KEY") == vault["vault_dreamstream_stripe_secret_key"], "STRIPE_SECRET_KEY from the vault")
check(env.get("STRIPE_WEBHOOK_SECRET") == vault["vault_dreamstream_stripe_webhook_secret"], "STRIPE_WEBHOOK_SECRET from the vault")
gh = vault["vault_dreamstream_oauth"]["github"]
check(env.get("DREAMSTREAM_OAUTH__GITHUB__CLIENT_ID") == gh["client_id"], "DREAMSTREAM_OAUTH__GITHUB__CLIENT_ID from the vault")
check(env.get("DREAMSTREAM_OAUTH__GITHUB__CLIENT_SECRET") == gh["client_secret"], "DREAMSTREAM_OAUTH__GITHUB__CLIENT_SECRET from the vault")
leaked = [p for p in ("etc/dreamstream/cluster.toml", "etc/dreamstream/gpu-node.toml")
          if any(s and s in (root / p).read_text() for s in (cookie, session_key, vault["vault_dreamstream_db_password"]))]
check(not leaked, "no secret in the .toml files")

print("systemd units")
for unit in ("dreamstream.service", "dreamstream-gpu-node.service"):
    expect_file(f"/etc/systemd/system/{unit}", 0o644, "root", "root")
    link = root / "etc/systemd/system/multi-user.target.wants" / unit
    check(link.is_symlink() and os.readlink(link) == f"/etc/systemd/system/{unit}", f"{unit} is enabled (multi-user.target.wants)")
    rendered = (root / "etc/systemd/system" / unit).read_text()
    reference = (repo / "systemd" / unit).read_text().replace("http://127.0.0.1:8080/healthz", f"http://{params['control_node_listen']}/healthz")
    check(rendered == reference, f"the installed {unit} is the repository's systemd/{unit} (but for the test's listen port)")
for timer in ("dreamstream-pg-backup.timer",):
    link = root / "etc/systemd/system/timers.target.wants" / timer
    check(link.is_symlink(), f"{timer} is enabled")
for svc in ("postgresql.service", "redis-server.service", "nginx.service"):
    check((root / "etc/systemd/system/multi-user.target.wants" / svc).is_symlink(), f"{svc} is enabled")
sqlite_timer = root / "etc/systemd/system/timers.target.wants/dreamstream-sqlite-backup.timer"
check(not (sqlite_timer.exists() or sqlite_timer.is_symlink()),
      "no SQLite backup timer (PostgreSQL is configured)")

print("PostgreSQL, Redis, nginx configuration")
pgconf = (root / "etc/postgresql/15/main/conf.d/dreamstream.conf").read_text()
check(f"port = {params['common_db_port']}" in pgconf, "PostgreSQL port from the inventory")
check("hostssl dreamstream     dreamstream     127.0.0.1/32            scram-sha-256" in (root / "etc/postgresql/15/main/pg_hba.conf").read_text(),
      "pg_hba.conf lets dreamstream in from loopback with TLS and scram-sha-256 only")
check("ssl_cert_file = '/etc/postgresql/15/main/dreamstream-server.crt'" in pgconf, "PostgreSQL serves the host's cluster certificate")
expect_file("/etc/postgresql/15/main/dreamstream-server.key", 0o600, "postgres", "postgres")
rconf = (root / "etc/redis/redis.conf").read_text()
check(f"requirepass {redis_pw}" in rconf, "redis.conf has the generated password")
check("bind 127.0.0.1 -::1\n" in rconf and f"port {params['common_redis_port']}" in rconf, "Redis bound to loopback on the inventory's port")
expect_file("/etc/redis/redis.conf", 0o640, "redis", "redis")
expect_file("/usr/local/sbin/dreamstream-pg-backup", 0o755, "root", "root")
site = (root / "etc/nginx/sites-available/dreamstream.conf").read_text()
check((root / "etc/nginx/sites-enabled/dreamstream.conf").is_symlink(), "nginx site enabled")
default_site = root / "etc/nginx/sites-enabled/default"
check(not (default_site.exists() or default_site.is_symlink()), "nginx default site disabled")
for needle in ("proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $dreamstream_connection;",
               "proxy_read_timeout 3600s;", f"listen {params['control_node_proxy_https_port']} ssl http2;",
               f"server {params['control_node_listen']};"):
    check(needle in site, f"nginx site has `{needle}`")
expect_file("/etc/nginx/tls/dreamstream.key", 0o600, "root", "root")
nginx_t = subprocess.run(["chroot", str(root), "nginx", "-t", "-q"], capture_output=True, text=True)
check(nginx_t.returncode == 0, f"nginx -t accepts the configuration {nginx_t.stderr.strip()}")

print("cluster TLS")
verify = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", root / "etc/dreamstream/tls/ca.crt",
                         root / "etc/dreamstream/tls/node.crt"], capture_output=True, text=True)
check(verify.returncode == 0, "node.crt is signed by the cluster CA (server use)")
verify = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", root / "etc/dreamstream/tls/ca.crt",
                         root / "etc/dreamstream/tls/node.crt"], capture_output=True, text=True)
check(verify.returncode == 0, "node.crt is valid for client use (mutual TLS)")
tls_dir = root / "etc/dreamstream/tls"
key_pub = subprocess.run(["openssl", "pkey", "-pubout", "-in", tls_dir / "node.key"], capture_output=True, text=True).stdout
cert_pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey", "-in", tls_dir / "node.crt"], capture_output=True, text=True).stdout
check(key_pub != "" and key_pub == cert_pub, "node.key belongs to node.crt")

if failures:
    print(f"\n{len(failures)} check(s) failed:", *failures, sep="\n  ")
    sys.exit(1)
print("\nall checks of the applied root passed")
