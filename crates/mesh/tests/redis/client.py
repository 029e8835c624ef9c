"""The `redis` package from PyPI against three mesh nodes (ports as arguments,
password in REDIS_PASSWORD): the calls agent setups make, each checked.
Exits non-zero with the failing check on the first difference."""

import os
import sys
import threading
import time

import redis

ports = [int(p) for p in sys.argv[1:4]]
password = os.environ["REDIS_PASSWORD"]


def conn(i, **kw):
    return redis.Redis(host="127.0.0.1", port=ports[i], password=password,
                       decode_responses=True, socket_timeout=15, **kw)


a, b, c = conn(0), conn(1), conn(2)


def check(what, got, want):
    if got != want:
        print(f"FAILED {what}: got {got!r}, want {want!r}")
        sys.exit(1)


check("ping", a.ping(), True)
check("set", a.set("py:k", "v", ex=60), True)
check("get elsewhere", b.get("py:k"), "v")
check("ttl", 0 < c.ttl("py:k") <= 60, True)
check("set nx", a.set("py:k", "w", nx=True), None)
check("incr", [a.incr("py:n"), b.incrby("py:n", 5), c.decr("py:n")], [1, 6, 5])
check("mset/mget", (a.mset({"py:a": "1", "py:b": "2"}), b.mget("py:a", "py:b", "py:none")),
      (True, ["1", "2", None]))
check("hash", (a.hset("py:h", mapping={"f": "1", "g": "2"}), c.hgetall("py:h")),
      (2, {"f": "1", "g": "2"}))
check("zset", (a.zadd("py:z", {"x": 1, "y": 2.5}), b.zrange("py:z", 0, -1, withscores=True)),
      (2, [("x", 1.0), ("y", 2.5)]))
check("zrangebyscore", c.zrangebyscore("py:z", "(1", "+inf"), ["y"])
check("set members", (a.sadd("py:s", "p", "q"), sorted(b.smembers("py:s"))), (2, ["p", "q"]))
check("list", (a.rpush("py:l", "1", "2", "3"), b.lpop("py:l", 2), c.lrange("py:l", 0, -1)),
      (3, ["1", "2"], ["3"]))

# A pipeline of 200 commands (non-transactional): every reply in order.
p = a.pipeline(transaction=False)
for i in range(100):
    p.set(f"py:p{i}", i)
    p.get(f"py:p{i}")
out = p.execute()
check("pipeline", out, [x for i in range(100) for x in (True, str(i))])

# A transaction with WATCH, redis-py's optimistic-locking helper, with a
# concurrent writer on another node forcing at least one retry.
attempts = []


def move(pipe):
    attempts.append(1)
    n = int(pipe.get("py:n") or 0)
    if len(attempts) == 1:
        c.set("py:n", 100)  # another client changes it under the watch
    pipe.multi()
    pipe.set("py:n", n + 1)


a.transaction(move, "py:n")
check("watch retried", (len(attempts), b.get("py:n")), (2, "101"))
check("multi/exec", a.pipeline(transaction=True).incr("py:n").get("py:n").execute(), [102, "102"])

# scan_iter sees every key.
check("scan_iter", len([k for k in b.scan_iter(match="py:p*", count=7)]), 100)

# Pub/sub across nodes.
ps = a.pubsub()
ps.subscribe("py:news")
ps.psubscribe("py:ev.*")
deadline = time.time() + 10
while time.time() < deadline:
    m = ps.get_message(timeout=0.2)
    if m and m["type"] == "psubscribe":
        break
check("numsub", c.pubsub_numsub("py:news"), [("py:news", 1)])
check("publish", (b.publish("py:news", "hi"), c.publish("py:ev.x", "yo")), (1, 1))
got = []
while time.time() < deadline and len(got) < 2:
    m = ps.get_message(timeout=0.5)
    if m and m["type"] in ("message", "pmessage"):
        got.append((m["type"], m["channel"], m["data"]))
check("messages", sorted(got), [("message", "py:news", "hi"), ("pmessage", "py:ev.x", "yo")])
ps.close()

# A blocking pop on node 0 served by a push on node 2.
result = {}
t = threading.Thread(target=lambda: result.setdefault("v", a.blpop(["py:q"], timeout=20)))
t.start()
time.sleep(0.3)  # a head start only; the check does not depend on it
c.rpush("py:q", "job")
t.join(25)
check("blpop", result.get("v"), ("py:q", "job"))
check("blpop timeout", b.blpop(["py:q"], timeout=0.2), None)

# RESP3 (redis-py 5+: protocol=3).
try:
    r3 = conn(1, protocol=3)
    check("resp3 hgetall", r3.hgetall("py:h"), {"f": "1", "g": "2"})
    check("resp3 zscore", r3.zscore("py:z", "y"), 2.5)
except TypeError:
    print("redis-py without protocol=3: RESP3 not exercised")

# Errors surface as exceptions with Redis's texts.
try:
    a.lpush("py:k", "x")
    check("wrongtype raised", False, True)
except redis.ResponseError as e:
    check("wrongtype", str(e).startswith("WRONGTYPE"), True)
try:
    conn(0).execute_command("NOSUCHCOMMAND")
    check("unknown raised", False, True)
except redis.ResponseError as e:
    check("unknown", "unknown command" in str(e), True)
try:
    redis.Redis(host="127.0.0.1", port=ports[0], password="wrong").ping()
    check("bad password raised", False, True)
except redis.AuthenticationError:
    pass

print("all checks passed")
