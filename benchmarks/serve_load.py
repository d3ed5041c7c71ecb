"""The web service under load: 20 samples uploaded at once while the page's read-only endpoints are polled.

Protocol:
1. Start ``leukolens serve --data-dir <tmp> --port <free port>`` as a real subprocess, with the shipped models and
   the default queue and worker settings (``queue_size`` 32 holds 20 samples, so no ``--queue-size`` is given;
   one worker thread). Wait until ``GET /api/status`` answers.
2. 20 client threads each POST one sample, the six BCCD demo fields, to ``/api/samples`` (multipart field
   ``files``), released at the same moment by a barrier. At the same moment 4 other client threads poll the
   non-analysis endpoints in a loop, 0.1 s apart, like pages open on the service: ``GET /api/samples``,
   ``GET /api/samples/{id}`` of an uploaded sample, ``GET /api/samples/{id}/cells`` once that sample is done and
   ``GET /api/search?q=neutrophil``. A monitor checks every 0.5 s whether all 20 samples are done (or failed);
   the run stops there, or after ``TIMEOUT_S``.
3. Every request's status and latency is recorded (httpx, one client per thread). Reported: failed requests (any
   non-2xx, by code), failed samples, the uploads' latency, p50/p95/max latency of the polled endpoints while the
   analyses ran, the time from the uploads' release to the last sample done and fields/s, the load average at the
   start. Target: no failed request, p95 of the polled endpoints under 200 ms.
4. The server is stopped (SIGINT, then SIGKILL after 30 s).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FIELDS = sorted((REPO / "src" / "leukolens" / "samples" / "bccd").rglob("*.jpg"))
UPLOADERS, POLLERS = 20, 4
POLL_PAUSE_S = 0.1
TIMEOUT_S = 480.0
TARGET_P95_MS = 200.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class _Log:
    """Every request: (endpoint, status code or exception name, latency s, time since the release s)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int | str, float, float]] = []
        self.lock = threading.Lock()
        self.t0 = 0.0

    def call(self, client: httpx.Client, endpoint: str, method: str, url: str, **kwargs) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
            status: int | str = response.status_code
        except httpx.HTTPError as error:
            response, status = None, type(error).__name__
        with self.lock:
            self.rows.append((endpoint, status, time.perf_counter() - start, start - self.t0))
        return response


def _wait_until_up(base: str, server: subprocess.Popen, timeout_s: float = 180.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if server.poll() is not None:
            raise SystemExit(f"leukolens serve exited with {server.returncode} before answering")
        try:
            if httpx.get(f"{base}/api/status", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"leukolens serve did not answer within {timeout_s:.0f} s")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _load(base: str) -> dict:
    log = _Log()
    files = [(path.name, path.read_bytes()) for path in FIELDS]
    ids: list[str] = []
    done: set[str] = set()
    final: dict[str, str] = {}
    barrier = threading.Barrier(UPLOADERS + POLLERS + 1)
    stop = threading.Event()

    def upload(number: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            barrier.wait()
            parts = [("files", (name, data, "image/jpeg")) for name, data in files]
            response = log.call(client, "POST /api/samples", "POST", "/api/samples", files=parts,
                                data={"name": f"load {number:02d}"})
            if response is not None and response.is_success:
                with log.lock:
                    ids.append(response.json()["id"])

    def poll(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=60) as client:
            barrier.wait()
            while not stop.is_set():
                log.call(client, "GET /api/samples", "GET", "/api/samples")
                with log.lock:
                    known, finished = list(ids), list(done)
                if known:
                    log.call(client, "GET /api/samples/{id}", "GET", f"/api/samples/{rng.choice(known)}")
                if finished:
                    log.call(client, "GET /api/samples/{id}/cells", "GET", f"/api/samples/{rng.choice(finished)}/cells")
                log.call(client, "GET /api/search", "GET", "/api/search", params={"q": "neutrophil"})
                stop.wait(POLL_PAUSE_S)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(UPLOADERS)]
    threads += [threading.Thread(target=poll, args=(i,)) for i in range(POLLERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    log.t0 = time.perf_counter()
    finished_s = None
    with httpx.Client(base_url=base, timeout=60) as monitor:
        while time.perf_counter() - log.t0 < TIMEOUT_S:
            time.sleep(0.5)
            try:
                response = monitor.get("/api/samples", params={"limit": 100})
            except httpx.HTTPError:
                continue
            if not response.is_success:
                continue
            statuses = {s["id"]: s["status"] for s in response.json()["samples"]}
            with log.lock:
                done.update(i for i, s in statuses.items() if s == "done")
                uploaded = len(ids) + sum(1 for r in log.rows if r[0].startswith("POST") and r[1] != 202)
            final = statuses
            if uploaded == UPLOADERS and statuses and all(s in ("done", "failed") for s in statuses.values()):
                finished_s = time.perf_counter() - log.t0
                break
    stop.set()
    for thread in threads:
        thread.join()
    return {"rows": log.rows, "finished_s": finished_s, "final": final, "ids": ids}


def run() -> str:
    if len(FIELDS) != 6:
        raise SystemExit(f"expected the six BCCD demo fields, found {len(FIELDS)}")
    leukolens = Path(sys.executable).with_name("leukolens")
    load_1m = os.getloadavg()[0]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server_log = Path(tmp) / "serve.log"
        with server_log.open("w") as out:
            server = subprocess.Popen([str(leukolens), "serve", "--data-dir", str(Path(tmp) / "data"),
                                       "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
            try:
                startup_s = _wait_until_up(base, server)
                result = _load(base)
            finally:
                _stop(server)
        log_tail = server_log.read_text()[-2000:]
    rows, finished_s = result["rows"], result["finished_s"]
    failures = Counter((r[0], r[1]) for r in rows if not (isinstance(r[1], int) and 200 <= r[1] < 300))
    failed_samples = sum(1 for s in result["final"].values() if s == "failed")
    uploads = [r[2] * 1000 for r in rows if r[0].startswith("POST")]
    window = finished_s if finished_s is not None else TIMEOUT_S
    polled = [r for r in rows if not r[0].startswith("POST") and r[3] <= window]
    by_endpoint: dict[str, list[float]] = {}
    for endpoint, _, latency, _ in polled:
        by_endpoint.setdefault(endpoint, []).append(latency * 1000)
    every = [r[2] * 1000 for r in polled]
    p95 = _percentile(every, 95)
    fields = UPLOADERS * len(FIELDS)
    met = not failures and not failed_samples and finished_s is not None and p95 < TARGET_P95_MS
    failure_text = ", ".join(f"{n}x {e} -> {s}" for (e, s), n in sorted(failures.items(), key=str)) or "none"

    def line(name: str, values: list[float]) -> str:
        return (f"| {name} | {len(values)} | {_percentile(values, 50):.0f} | {_percentile(values, 95):.0f} | "
                f"{max(values):.0f} |")

    table = ["| requests | n | p50 ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|",
             line("uploads (POST, 6 fields)", uploads)]
    table += [line(name, values) for name, values in sorted(by_endpoint.items())]
    table.append(line("**all non-analysis requests**", every))
    analysed = (f"{finished_s:.1f} s ({fields / finished_s:.2f} fields/s)" if finished_s is not None
                else f"not finished within {TIMEOUT_S:.0f} s (final statuses: {Counter(result['final'].values())})")
    body = [
        "## Web service under load: 20 concurrent uploads while the page's endpoints are polled",
        f"`leukolens serve` as a subprocess (shipped models, default settings: queue size 32, which holds the 20 "
        f"samples, 1 worker; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); {UPLOADERS} threads "
        f"each upload the six BCCD demo fields as one sample at the same moment while {POLLERS} threads poll "
        f"`GET /api/samples`, `/api/samples/{{id}}`, `/api/samples/{{id}}/cells` (done samples) and "
        f"`/api/search?q=neutrophil` {POLL_PAUSE_S} s apart until every sample is done. Latencies of the polled "
        "endpoints are those of requests sent while analyses ran. Protocol: `benchmarks/serve_load.py`.",
        "",
        f"- Load average (1 min) at the start: {load_1m:.2f}; server answered {startup_s:.1f} s after launch.",
        f"- Failed requests (non-2xx or no answer): {failure_text}. Failed samples: {failed_samples}.",
        f"- Time to analyse all {UPLOADERS} samples ({fields} fields), from the uploads' release: {analysed}.",
        f"- Target: no failed request, p95 of the non-analysis endpoints under {TARGET_P95_MS:.0f} ms while "
        f"analyses run. Ours: p95 {p95:.0f} ms, {sum(failures.values())} failed: "
        f"**{'met' if met else 'not met'}**.",
        "",
        *table,
    ]
    if failures or failed_samples or finished_s is None:
        body += ["", "Server log (tail):", "", "```", log_tail.strip(), "```"]
    return "\n".join(body)


if __name__ == "__main__":
    print(run())
