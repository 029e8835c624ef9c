"""Drives `mesh mcp` with the official MCP Python SDK (PyPI `mcp`) over stdio.

Usage: client.py MESH_EXE NODE0_URL NODE1_URL
Two MCP servers, attached to two different nodes of a live mesh. Checks the
tool list and schemas, then real effects: memory stored through one node is
retrieved through the other; a task submitted through MCP runs on a worker and
its output comes back; bad arguments are tool errors, not crashes.
Prints one line per check; exits non-zero on the first failure.
"""
import asyncio
import json
import sys
import threading
import urllib.request
from contextlib import AsyncExitStack

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

EXE, NODE0, NODE1 = sys.argv[1:4]
TOOLS = ["swarm_init", "swarm_status", "swarm_monitor", "agent_list",
         "task_orchestrate", "task_status", "task_results", "memory_usage",
         "agent_spawn", "daa_consensus", "daa_communication", "daa_fault_tolerance",
         "topology_optimize", "performance_report"]


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


async def session(stack, node):
    params = StdioServerParameters(command=EXE, args=["mcp", "--node", node])
    r, w = await stack.enter_async_context(stdio_client(params))
    s = await stack.enter_async_context(ClientSession(r, w))
    await s.initialize()
    return s


async def call(s, tool, args):
    res = await s.call_tool(tool, args)
    text = res.content[0].text if res.content else ""
    return res.is_error, text


def listen(node, channel, want, found, ready):
    """Reads the node's event stream until a message with `want` arrives."""
    try:
        with urllib.request.urlopen(f"{node}/v1/events?channels={channel}", timeout=20) as r:
            while True:
                line = r.readline().decode()
                if not line:
                    return
                if "subscribed" in line:
                    ready.set()
                if line.startswith("data:") and want in line:
                    found.append(json.loads(line[5:]))
                    return
    except Exception as e:  # a timeout is a failure the caller reports
        found.append({"error": str(e)})
    finally:
        ready.set()


async def main():
    async with AsyncExitStack() as stack:
        a = await session(stack, NODE0)
        b = await session(stack, NODE1)

        tools = {t.name: t for t in (await a.list_tools()).tools}
        check(all(n in tools for n in TOOLS), f"tools listed: {sorted(tools)}")
        def schema(t):
            return getattr(t, "input_schema", None) or getattr(t, "inputSchema", None) or {}
        for n in TOOLS:
            t = tools[n]
            check(bool(t.description) and schema(t).get("type") == "object",
                  f"{n} has a description and an object schema")
        init_props = schema(tools["swarm_init"])["properties"]
        check("maxAgents" in init_props and "topology" in init_props, "swarm_init takes topology, maxAgents")

        err, text = await call(a, "swarm_init", {"topology": "star"})
        check(err and "mesh" in text, "an unknown topology is a tool error: " + text)
        err, text = await call(a, "swarm_init", {"topology": "mesh", "strategy": "capability"})
        check(not err and len(json.loads(text)["members"]) == 3, "swarm_init sees three members")

        err, text = await call(a, "memory_usage", {"action": "store", "namespace": "mcp",
                                                   "key": "plan", "value": "ship it", "ttl": 600})
        check(not err, "stored through node 0: " + text[:80])
        err, text = await call(b, "memory_usage", {"action": "retrieve", "namespace": "mcp", "key": "plan"})
        check(not err and json.loads(text)["value"] == "ship it", "retrieved through node 1")
        err, text = await call(b, "memory_usage", {"action": "search", "namespace": "mcp", "pattern": "pl*"})
        check(not err and "plan" in text, "search finds it")
        err, text = await call(a, "memory_usage", {"action": "fly", "key": "x"})
        check(err and "store, retrieve" in text, "an unknown action is a tool error")

        err, text = await call(a, "task_orchestrate", {"task": "from mcp", "id": "mcp-1",
                                                       "capabilities": ["sh"]})
        check(not err and json.loads(text)["id"] == "mcp-1", "task submitted through MCP")
        err, text = await call(b, "task_results", {"taskId": "mcp-1", "wait": 30})
        got = json.loads(text) if not err else {}
        check(got.get("state") == "completed" and "ran:from mcp" in (got.get("result") or ""),
              f"the task ran on a worker: {text[:300]}")
        err, text = await call(a, "task_status", {"taskId": "no-such-task"})
        check(err and "not_found" in text, "an unknown task is a tool error")

        err, text = await call(a, "swarm_monitor", {"interval": 0.2, "duration": 0.6, "metrics": ["consensus"]})
        samples = json.loads(text)["samples"] if not err else []
        check(len(samples) >= 3 and len({s["at_secs"] for s in samples}) == len(samples),
              f"swarm_monitor took {len(samples)} distinct samples")
        err, text = await call(a, "agent_list", {})
        check(not err and "w0" in text, "agent_list shows the worker")

        # agent_spawn with a command starts a real worker process for the agent.
        err, text = await call(b, "agent_spawn", {"type": "builder", "name": "mcp-builder",
                                                  "capabilities": ["build"], "command": "echo built"})
        check(not err and json.loads(text)["worker_pid"] > 0, "agent_spawn started a worker: " + text[:120])
        err, text = await call(a, "task_orchestrate", {"task": "x", "id": "mcp-build",
                                                       "capabilities": ["build"]})
        check(not err, "a build task submitted")
        err, text = await call(a, "task_results", {"taskId": "mcp-build", "wait": 30})
        got = json.loads(text) if not err else {}
        check(got.get("state") == "completed" and got.get("agent") == "mcp-builder",
              "the spawned worker ran it: " + text[:200])

        # daa_consensus: two agents registered through MCP vote a proposal through.
        for name in ["judge-1", "judge-2"]:
            err, text = await call(a, "agent_spawn", {"type": "judge", "name": name})
            check(not err, f"{name} registered with a key on this machine")
        err, text = await call(a, "daa_consensus", {"action": "propose", "proposal_id": "release",
                                                    "proposal": {"ship": "1.0"},
                                                    "agents": ["judge-1", "judge-2"], "threshold": 1.0})
        check(not err, "proposal opened: " + text[:120])
        for name, s in [("judge-1", a), ("judge-2", b)]:
            err, text = await call(s, "daa_consensus", {"action": "vote", "proposal_id": "release",
                                                        "agent": name, "vote": "approve", "reason": "green"})
            check(not err, f"{name} voted (signed): " + text[:120])
        err, text = await call(b, "daa_consensus", {"action": "status", "proposal_id": "release", "wait": 10})
        check(not err and json.loads(text)["status"] == "approved", "the proposal is approved: " + text[:200])
        err, text = await call(a, "daa_consensus", {"action": "vote", "proposal_id": "release",
                                                    "agent": "nobody", "vote": "approve"})
        check(err, "a vote from an agent without a key here is a tool error")

        # daa_communication: judge-1 (registered through node 0) has no listener
        # yet: its message waits in its mailbox there, and arrives when it listens.
        err, text = await call(b, "daa_communication", {"from": "judge-2", "to": "judge-1",
                                                        "message": "status?"})
        got = json.loads(text) if not err else {}
        check(not err and list(got.get("nodes", {}).values()) == [{"status": "queued"}],
              "a message to an agent without a listener is queued: " + text[:200])
        found, ready = [], threading.Event()
        t = threading.Thread(target=listen, args=(NODE0, "inbox.agent.judge-1", "status?", found, ready))
        t.start()
        await asyncio.to_thread(t.join, 25)
        check(found and found[0].get("from") == "judge-2" and found[0].get("message") == "status?",
              f"judge-1 received it when it listened: {found}")
        found, ready = [], threading.Event()
        t = threading.Thread(target=listen, args=(NODE1, "inbox.all", "everyone", found, ready))
        t.start()
        await asyncio.to_thread(ready.wait, 10)
        err, text = await call(a, "daa_communication", {"from": "judge-1", "to": "all",
                                                        "message": {"note": "everyone"}})
        got = json.loads(text) if not err else {}
        check(not err and len(got.get("nodes", {})) == 3 and got.get("listeners") == 1,
              "a broadcast reaches three nodes, one listener: " + text[:300])
        await asyncio.to_thread(t.join, 25)
        check(found and found[0].get("data") == {"note": "everyone"}, f"the listener got it: {found}")
        err, text = await call(a, "daa_communication", {"from": "x", "to": "nobody", "message": "hi"})
        check(err and "not_found" in text, "a message to an unknown agent is a tool error")

        # daa_fault_tolerance: liveness, then a failover that really moves a running task.
        err, text = await call(a, "daa_fault_tolerance", {"agentId": "w0", "strategy": "heartbeat_monitor"})
        got = json.loads(text) if not err else {}
        check(got.get("alive") is True and got.get("node_state") == "alive", "w0 is alive: " + text[:200])
        err, text = await call(b, "agent_spawn", {"type": "sleeper", "name": "sleeper",
                                                  "capabilities": ["slow"], "command": "sleep 30"})
        check(not err, "a slow worker started")
        err, text = await call(a, "task_orchestrate", {"task": "nap", "id": "mcp-slow", "capabilities": ["slow"]})
        check(not err, "a slow task submitted")
        for _ in range(200):
            err, text = await call(a, "task_status", {"taskId": "mcp-slow"})
            if not err and json.loads(text).get("state") == "running":
                break
            await asyncio.sleep(0.05)
        check(json.loads(text).get("state") == "running", "the slow task runs: " + text[:200])
        err, text = await call(a, "daa_fault_tolerance", {"agentId": "sleeper", "strategy": "failover_recovery"})
        got = json.loads(text) if not err else {}
        check(not err and got.get("moved") == ["mcp-slow"], "failover moved the running task: " + text[:200])
        err, text = await call(b, "task_status", {"taskId": "mcp-slow"})
        got = json.loads(text) if not err else {}
        check(got.get("state") != "running" and "failover of agent 'sleeper'" in text,
              "its attempt ended as lost, with the reason: " + text[:300])
        err, text = await call(a, "daa_fault_tolerance", {"agentId": "w0", "strategy": "pray"})
        check(err and "heartbeat_monitor" in text, "an unknown strategy is a tool error")

        # topology_optimize: a rebalancing round and every peer's health.
        err, text = await call(b, "topology_optimize", {})
        got = json.loads(text) if not err else {}
        check(not err and len(got.get("peers", [])) == 3 and "moves" in got
              and all(p["state"] == "alive" for p in got["peers"]),
              "topology_optimize reports moves and three healthy peers: " + text[:300])

        # performance_report: from the node's retained samples; unmeasured is null.
        err, text = await call(a, "performance_report", {"timeframe": "5m", "format": "json"})
        got = json.loads(text) if not err else {}
        figures = got.get("figures", {})
        check(not err and got.get("samples", 0) >= 1 and figures.get("cpu_percent", {}).get("measured", 0) >= 1
              and figures.get("members_alive", {}).get("latest") == 3,
              "performance_report summarises measured samples: " + text[:3000])
        check(all(f["mean"] is None or f["measured"] > 0 for f in figures.values()),
              "a figure without samples is null")
        err, text = await call(a, "performance_report", {"timeframe": "1h", "format": "summary"})
        check(not err and "Performance of node" in text, "a text summary: " + text[:120])
        err, text = await call(a, "performance_report", {"timeframe": "forever"})
        check(err, "a bad timeframe is a tool error")

        # An unknown tool is an error, not a crash; the server keeps serving.
        try:
            res = await a.call_tool("swarm_destroy", {})
            refused = res.is_error
        except Exception:
            refused = True
        check(refused, "an unknown tool is refused")
        err, text = await call(a, "swarm_status", {})
        check(not err, "the server still answers after bad calls")

        # An argument the schema does not have is refused, not ignored.
        try:
            res = await a.call_tool("swarm_init", {"topology": "mesh", "bogus": 1})
            refused = res.is_error
        except Exception:
            refused = True
        check(refused, "an unknown argument fails the schema")
    print("all checks passed", flush=True)


asyncio.run(main())
