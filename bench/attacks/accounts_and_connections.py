import os
import sys, time, socket, subprocess, os, threading
sys.path.insert(0,os.path.dirname(os.path.abspath(__file__))); from common import *
which=sys.argv[1]
if which=="m2":
    srv=Server(name="reg")
    try:
        codes=[]
        for i in range(25):
            c=Client(srv.port); st,_=c.req("POST","/api/auth/register",{"username":f"farm_{i}","password":"farm password"}); codes.append(st)
        c=Client(srv.port); st,_=c.req("POST","/register",form={"username":"farm_form","password":"farm password","csrf":c.csrf})
        print(f"JSON registrations from one IP: {codes.count(201)} of 25 accepted (then {sorted(set(x for x in codes if x!=201))}); the form afterwards: {st}")
    finally: srv.stop()
if which=="m3":
    srv=Server(env_extra={"DREAMSTREAM_TRUSTED_PROXIES":'["127.0.0.1"]'},name="lock")
    try:
        srv.admin("create-user","owner","--password","the owner's password")
        stop=[False]; counts={}
        def attack(k):
            i=0
            while not stop[0]:
                ip=f"203.0.113.{k*10+i%10+1}" if k<5 else f"2001:db8:7:7::{i%1000+1:x}"
                try:
                    c=Client(srv.port,ip=ip); st,_=c.req("POST","/api/auth/login",{"username":"owner","password":f"guess {k} {i}"})
                    counts[st]=counts.get(st,0)+1
                except Exception as e: counts["err"]=counts.get("err",0)+1
                i+=1
        ts=[threading.Thread(target=attack,args=(k,)) for k in range(6)]; [t.start() for t in ts]
        time.sleep(5)
        res=[]
        for j in range(10):
            c=Client(srv.port,ip="198.51.100.7"); t0=time.time(); st,_=c.req("POST","/api/auth/login",{"username":"owner","password":"the owner's password"}); res.append((st,time.time()-t0)); time.sleep(0.5)
        stop[0]=True; [t.join() for t in ts]
        ok=sum(1 for s,_ in res if s==200)
        print(f"owner logins during the attack: {ok} of {len(res)} succeeded, latency {min(l for _,l in res)*1000:.0f}-{max(l for _,l in res)*1000:.0f} ms; attacker answers {counts}")
    finally: srv.stop()
if which=="m4":
    rport=free_port(); rdir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "ds-attack-redis"); os.makedirs(rdir,exist_ok=True)
    def start_redis():
        p=subprocess.Popen(["redis-server","--bind","127.0.0.1","--port",str(rport),"--save","","--appendonly","no","--dir",rdir],stdout=subprocess.DEVNULL)
        for _ in range(100):
            try: socket.create_connection(("127.0.0.1",rport),timeout=0.2).close(); break
            except Exception: time.sleep(0.05)
        return p
    r=start_redis()
    srv=Server(env_extra={"REDIS_URL":f"redis://127.0.0.1:{rport}"},name="redis")
    try:
        srv.admin("create-user","owner","--password","the owner's password")
        def login():
            c=Client(srv.port); t0=time.time()
            try: st,_=c.req("POST","/api/auth/login",{"username":"owner","password":"the owner's password"},timeout=150)
            except Exception as e: st=str(e)
            return st, time.time()-t0
        print("normal:", login())
        os.kill(r.pid, signal.SIGSTOP); time.sleep(0.5)
        print("Redis SIGSTOPped:", [login() for _ in range(3)])
        os.kill(r.pid, signal.SIGCONT)
        print("after SIGCONT:", [login() for _ in range(3)])
        r.kill(); r.wait(); time.sleep(1)
        print("Redis killed:", login())
        r=start_redis(); t0=time.time()
        first=login()
        print(f"restarted: first login {first}")
        # Until a login succeeds (the issue saw 113-125 s).
        while True:
            st,l=login()
            if st==200: print(f"first successful login {time.time()-t0:.2f} s after the restart"); break
            if time.time()-t0>150: print("no login in 150 s"); break
            time.sleep(0.2)
    finally:
        srv.stop(); r.kill()
if which=="m5":
    srv=Server(name="slow")
    try:
        base=srv.fds(); socks=[]; refused=0
        for i in range(400):
            s=socket.create_connection(("127.0.0.1",srv.port)); s.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            socks.append(s)
        time.sleep(2); during=srv.fds()
        t0=time.time()
        while time.time()-t0<40 and srv.fds()>base+5: time.sleep(0.5)
        print(f"server fds: {base} before, {during} 2 s after 400 slow-body connections, {srv.fds()} after {time.time()-t0+2:.1f} s (body_timeout_secs 30, max_connections_per_ip 256)")
        answers={}
        for s in socks:
            s.settimeout(0.5)
            try: a=s.recv(100).split(b"\r\n")[0].decode()
            except Exception as e: a="no answer"
            answers[a]=answers.get(a,0)+1
        print("what the 400 clients got:", answers)
    finally: srv.stop()
