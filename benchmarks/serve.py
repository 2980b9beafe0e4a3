"""Load check of `lamra serve`: many concurrent clients, every answer checked against the sequential one.

Starts `lamra serve` (the demo collection, shipped model) on a free local port, asks each request of a
fixed mix (text, image, text+image, pointwise rerank) once in sequence to record the expected hits,
then runs CLIENTS client threads for SECONDS, each sending the mix in its own rotation. Prints, per
request kind, the count, p50/p95 latency, the ratio of p50 to the sequential latency of the same
request measured in this run, errors (non-200 or transport) and mismatches (hits or scores other than
the sequential answer). Zero errors and zero mismatches are expected; the exit status is 1 otherwise.

    .venv/bin/python benchmarks/serve.py [--clients 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from lamra.demo import DEMO_DIR

SCORE_TOLERANCE = 1e-4  # bf16 autocast; the same request on the same weights should repeat exactly


def image_b64(name: str) -> str:
    return base64.b64encode((DEMO_DIR / name).read_bytes()).decode()


def request_mix() -> list[tuple[str, dict]]:
    cat, pizza = image_b64("twitter-1f431.png"), image_b64("twitter-1f355.png")
    return [
        ("text", {"txt": "a cheesy slice of Italian food", "top_k": 5}),
        ("text", {"txt": "a pet that meows", "top_k": 5,
                  "instruction": "Retrieve the image that matches the description."}),
        ("image", {"image": cat, "top_k": 5, "instruction": "Find the same emoji drawn in another style."}),
        ("text+image", {"txt": "the same food", "image": pizza, "top_k": 5}),
        ("rerank", {"txt": "a cup of hot coffee", "top_k": 5, "rerank": "pointwise"}),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    lamra = Path(sys.executable).with_name("lamra")
    server = subprocess.Popen([str(lamra), "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"lamra serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(1)
    server.kill()
    raise SystemExit("lamra serve did not answer /health within 300 s")


def answer(response: httpx.Response) -> list[tuple[int, float]]:
    return [(hit["n"], hit["score"]) for hit in response.json()["hits"]]


def same(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    return [n for n, _ in got] == [n for n, _ in expected] and all(
        abs(a - b) <= SCORE_TOLERANCE for (_, a), (_, b) in zip(got, expected, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/search"
    mix = request_mix()
    try:
        with httpx.Client(timeout=120) as client:
            client.post(url, json=mix[0][1])  # warm-up
            expected, sequential = [], []
            for _, body in mix:
                began = time.perf_counter()
                response = client.post(url, json=body)
                sequential.append(time.perf_counter() - began)
                response.raise_for_status()
                expected.append(answer(response))

        latencies: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, list[str]] = defaultdict(list)
        mismatches: dict[str, int] = defaultdict(int)
        lock = threading.Lock()
        stop_at = time.perf_counter() + args.seconds

        def client_loop(offset: int) -> None:
            with httpx.Client(timeout=300) as client:
                turn = offset
                while time.perf_counter() < stop_at:
                    index = turn % len(mix)
                    kind, body = mix[index]
                    turn += 1
                    began = time.perf_counter()
                    try:
                        response = client.post(url, json=body)
                    except httpx.TransportError as error:
                        with lock:
                            errors[kind].append(type(error).__name__)
                        continue
                    elapsed = time.perf_counter() - began
                    with lock:
                        latencies[kind].append(elapsed)
                        if response.status_code != 200:
                            errors[kind].append(str(response.status_code))
                        elif not same(answer(response), expected[index]):
                            mismatches[kind] += 1

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)

    baseline = defaultdict(list)
    for (kind, _), seconds in zip(mix, sequential, strict=True):
        baseline[kind].append(seconds)
    print(f"{args.clients} clients for {args.seconds:.0f} s against `lamra serve` (demo collection); "
          f"{sum(map(len, latencies.values())) / wall:.1f} requests/s overall\n")
    print("| request | answered | p50 s | p95 s | p50 / sequential | errors | mismatches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in dict.fromkeys(kind for kind, _ in mix):
        times = sorted(latencies[kind])
        p50 = statistics.median(times) if times else float("nan")
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else float("nan")
        ratio = p50 / statistics.mean(baseline[kind])
        print(f"| {kind} | {len(times)} | {p50:.2f} | {p95:.2f} | {ratio:.1f}x | {len(errors[kind])} | {mismatches[kind]} |")
    failed = sum(map(len, errors.values())) + sum(mismatches.values())
    if failed:
        print(f"\n{failed} failed answers: {dict(errors)} mismatches {dict(mismatches)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
