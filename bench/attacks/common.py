import json, os, socket, subprocess, time, http.client, signal
BIN=os.environ.get("DS_BIN", os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug/dreamstream"))
def free_port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
class Server:
    def __init__(self, env_extra=None, name="m"):
        self.port=free_port(); self.dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ds-attack-{name}-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        env=dict(os.environ); env.update(env_extra or {})
        env["DREAMSTREAM_LOG_FORMAT"]="text"; env["RUST_LOG"]="warn"
        self.env=env
        self.p=subprocess.Popen([BIN,"serve","--listen",f"127.0.0.1:{self.port}","--data-dir",self.dir,"--local-workers","0"],env=env,stdout=open(self.dir+"/out.log","w"),stderr=subprocess.STDOUT)
        for _ in range(600):
            try:
                c=http.client.HTTPConnection("127.0.0.1",self.port,timeout=2); c.request("GET","/healthz"); c.getresponse().read(); break
            except Exception: time.sleep(0.1)
    def admin(self,*args):
        subprocess.run([BIN,"admin",*args[:1],"--data-dir",self.dir,*args[1:]],env=self.env,check=True,capture_output=True)
    def rss_mb(self):
        for l in open(f"/proc/{self.p.pid}/status"):
            if l.startswith("VmRSS"): return int(l.split()[1])/1024
    def fds(self): return len(os.listdir(f"/proc/{self.p.pid}/fd"))
    def stop(self): self.p.terminate(); self.p.wait(10)
class Client:
    def __init__(self, port, ip=None):
        self.port=port; self.cookies={}; self.csrf=""; self.ip=ip
        st,b=self.req("GET","/api/auth/csrf"); self.csrf=b["csrf"]
    def req(self, method, path, body=None, form=None, timeout=60):
        c=http.client.HTTPConnection("127.0.0.1",self.port,timeout=timeout)
        h={"X-CSRF-Token":self.csrf}
        if self.cookies: h["Cookie"]="; ".join(f"{k}={v}" for k,v in self.cookies.items())
        if self.ip: h["X-Forwarded-For"]=self.ip
        data=None
        if body is not None: data=json.dumps(body); h["Content-Type"]="application/json"
        if form is not None:
            import urllib.parse; data=urllib.parse.urlencode(form); h["Content-Type"]="application/x-www-form-urlencoded"
        c.request(method,path,body=data,headers=h); r=c.getresponse(); raw=r.read()
        for k,v in r.getheaders():
            if k.lower()=="set-cookie":
                kv=v.split(";")[0]; n,_,val=kv.partition("=")
                if val: self.cookies[n]=val
                else: self.cookies.pop(n,None)
        try: j=json.loads(raw)
        except Exception: j=None
        if isinstance(j,dict) and "csrf" in j: self.csrf=j["csrf"]
        return r.status, j
def ws_upgrade(port, path):
    s=socket.create_connection(("127.0.0.1",port)); s.settimeout(10)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf=b""
    while b"\r\n\r\n" not in buf: buf+=s.recv(4096)
    assert buf.startswith(b"HTTP/1.1 101"), buf[:200]
    return s
