"""Load generation with wrk: pre-signed requests (a fresh nonce each) replayed from a file.

wrk cannot compute HMACs, so every request is signed in advance; each is used once, so no nonce
repeats and the gateway does the full verification work for every request it answers.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

from gateway.auth import signed_headers

_LUA = r"""
local lines = {}
local n, i = 0, 0
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
init = function(args)
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    n = n + 1
    lines[n] = line:gsub("\\r\\n", "\r\n")
  end
end
request = function()
  i = i + 1
  if i > n then i = 1 end
  return lines[i]
end
delay = function()
  return delay_ms
end
done = function(summary, latency, requests)
  local out = string.format('{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000)
  io.write("BENCH_JSON " .. out .. "\n")
end
"""


def write_requests(path: Path, count: int, key_id: str, secret: str, make_body: Callable[[int], bytes],
                   target: str) -> None:
    """``count`` raw HTTP requests, one per line (CRLF escaped), each signed with its own nonce."""
    now = time.time()
    with path.open("w") as out:
        for i in range(count):
            body = make_body(i)
            headers = signed_headers(key_id, secret, "POST", target, body, now)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            raw = (f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body
            out.write(raw.decode().replace("\r\n", "\\r\\n") + "\n")


def wrk(url: str, requests_file: Path, *, seconds: int, connections: int, delay_ms: float = 0.0,
        workdir: Path) -> dict:
    """Run wrk (one thread: the other core belongs to the server) and return its summary."""
    script = workdir / "replay.lua"
    script.write_text(_LUA)
    env = {"BENCH_REQUESTS": str(requests_file), "BENCH_DELAY_MS": str(delay_ms), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
                             url], capture_output=True, text=True, env=env, check=True)
    match = re.search(r"BENCH_JSON (\{.*\})", result.stdout)
    if not match:
        raise RuntimeError(f"wrk printed no summary: {result.stdout} {result.stderr}")
    summary = json.loads(match.group(1))
    summary["rps"] = round(summary["requests"] / (summary["duration_us"] / 1e6), 1)
    return summary
