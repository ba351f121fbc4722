"""HTTP API throughput and latency: `ferbench-serve` under load against the same recognizer called in-process.

One 640x480 photo with one face (the astronaut photo shipped with scikit-image, centred on a grey canvas)
is analysed at concurrency 1, 4 and 16:
- in-process: as many threads, each with its own recognizer (YuNet, the model shared, 1 thread each),
  calling `EmotionRecognizer.analyze` on the decoded photo, as the server's workers do after decoding;
- over HTTP: `ferbench-serve` on a free loopback port (`--workers` = the CPU count), and as many client
  threads, each on one keep-alive connection, POSTing the PNG to /v1/predict.
Each run is bounded by `--requests` per concurrency level and `--seconds`; an error is counted, never
retried. Prints a markdown table (requests/s, p50 and p99 ms, errors, HTTP over in-process throughput).

Usage: .venv/bin/python scripts/bench_serve.py [--model DIR] [--detector-model FILE] [--requests 200]
       [--seconds 60] [--concurrency 1 4 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from ferbench.data.decode import decode_rgb
from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import build_detector
from ferbench.serving.inference import EmotionRecognizer, choose_model_folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def photo_png() -> bytes:
    from skimage import data

    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 64:576] = np.asarray(Image.fromarray(data.astronaut()).resize((512, 480)))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "PNG")
    return buffer.getvalue()


def load_run(concurrency: int, requests: int, seconds: float, call) -> dict:
    """`concurrency` threads share `requests` calls (stopping at `seconds`); latencies in ms, errors counted."""
    latencies: list[float] = []
    errors = 0
    left = [requests]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        one = call()
        while time.perf_counter() < deadline:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            start = time.perf_counter()
            try:
                one()
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
            except Exception:  # counted, never retried: the table says how many
                with lock:
                    errors += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    done = np.array(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "errors": errors,
        "requests_per_second": round(len(done) / wall, 2),
        "p50_ms": round(float(np.percentile(done, 50)), 1) if len(done) else None,
        "p99_ms": round(float(np.percentile(done, 99)), 1) if len(done) else None,
    }


def in_process(model: EmotionModel, detector_model: Path | None, rgb: np.ndarray):
    def make():
        recognizer = EmotionRecognizer(model, build_detector("yunet", model_file=detector_model), smoothing=0.0)
        return lambda: recognizer.analyze(rgb)

    return make


def over_http(port: int, png: bytes):
    boundary = "bench-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.png"\r\n'
    body = (head + "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def make():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def one() -> None:
            connection.request("POST", "/v1/predict", body, headers)
            answer = connection.getresponse()
            payload = answer.read()
            if answer.status != 200 or not json.loads(payload)["faces"]:
                raise RuntimeError(f"HTTP {answer.status}")

        return one

    return make


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, detector_model: Path | None, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "ferbench.serving.api", "--model", str(model), "--port", str(port)]
    if detector_model:
        command += ["--detector-model", str(detector_model)]
    server = subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/ready", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("bench_serve: the server did not become ready in 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: what the CLI serves)")
    parser.add_argument("--detector-model", type=Path, help="local YuNet file (default: the cached copy)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level and mode")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per concurrency level and mode")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    folder = choose_model_folder(args.model).folder
    png = photo_png()
    model = EmotionModel(folder, threads=1)
    rgb = decode_rgb(png)
    rows = []
    port = free_port()
    server = start_server(folder, args.detector_model, port)
    try:
        for concurrency in args.concurrency:
            local = load_run(concurrency, args.requests, args.seconds, in_process(model, args.detector_model, rgb))
            http_row = load_run(concurrency, args.requests, args.seconds, over_http(port, png))
            ratio = http_row["requests_per_second"] / local["requests_per_second"]
            rows.append({"in_process": local, "http": http_row, "http_share_of_in_process": round(ratio, 3)})
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"model {folder}, {os.cpu_count()} CPU cores; one 640x480 photo with one face, YuNet + the model")
    print("| concurrency | in-process req/s | p50 ms | p99 ms | HTTP req/s | p50 ms | p99 ms | errors | HTTP share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        local, remote = row["in_process"], row["http"]
        print(
            f"| {local['concurrency']} | {local['requests_per_second']} | {local['p50_ms']} | {local['p99_ms']} | "
            f"{remote['requests_per_second']} | {remote['p50_ms']} | {remote['p99_ms']} | "
            f"{local['errors'] + remote['errors']} | {row['http_share_of_in_process']:.0%} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
