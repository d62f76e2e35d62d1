#!/usr/bin/env python3
"""Closed-loop load benchmark for cmn-server (a program, not a test).

Each of C client threads sends GenerateReport, waits for the answer and sends the next, until the level's
request count is reached; levels run one after the other. Reports throughput, latency percentiles, errors by
status, the server's batch sizes (from the responses) and, when the server's pid is known, its RSS.

  # start a server itself (port 0, metrics off) and run the standard levels
  bench/load_grpc.py --server-bin build/server/cmn-server --bundle build/bundles/untrained-demo \
      --levels 1,4,8,16 --requests 32
  # a 10,000-request soak at concurrency 32 against a running server whose pid is known, RSS every 500 answers
  bench/load_grpc.py --target 127.0.0.1:50051 --pid 1234 --levels 32 --requests 10000 --rss-every 500
  # hot reload under load: every 5 s the server swaps between --bundle and B (ReloadModel); every answer must be OK
  bench/load_grpc.py --server-bin build/server/cmn-server --bundle A --levels 8 --requests 200 \
      --reload-bundle B --reload-every-s 5

Stubs are generated from proto/ at start-up (python3-grpcio, python3-grpc-tools). Goal on 2 cores (issue 4):
throughput at 8 >= 1.5x throughput at 1, zero unexpected errors, p99 at 8 <= 4x p50 at 1, flat RSS in the soak.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_stubs(out_dir):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                    "--python_out=" + out_dir, "--grpc_python_out=" + out_dir, "cmn/v1/report_service.proto"],
                   check=True)
    sys.path.insert(0, out_dir)
    from cmn.v1 import report_service_pb2, report_service_pb2_grpc  # noqa: E402
    return report_service_pb2, report_service_pb2_grpc


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def start_server(args):
    command = [args.server_bin, "--config", os.path.join(ROOT, "configs/server.yaml"), "model.bundle=" + args.bundle,
               "server.host=127.0.0.1", "server.port=0", "metrics.port=-1", "logging.requests=false"]
    command += args.server_arg
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening port=(\d+)", line)
    if not match:
        proc.kill()
        sys.exit("cmn-server did not start: %r" % line)
    return proc, "127.0.0.1:" + match.group(1)


def run_level(stub, pb, request, concurrency, count, deadline_s, pid=None, rss_every=0):
    import grpc
    latencies, codes, batches, digests = [], collections.Counter(), collections.Counter(), collections.Counter()
    lock = threading.Lock()
    remaining = [count]
    rss_samples = []  # (requests answered, server RSS MiB) every rss_every answers: a soak's RSS curve

    def client():
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            start = time.perf_counter()
            try:
                response = stub.GenerateReport(request, timeout=deadline_s)
                code, batch = "OK", response.timings.batch_size
                with lock:
                    digests[response.model.digest] += 1
            except grpc.RpcError as e:
                code, batch = e.code().name, None
            elapsed = time.perf_counter() - start
            with lock:
                codes[code] += 1
                if code == "OK":
                    latencies.append(elapsed)
                    batches[batch] += 1
                answered = sum(codes.values())
                if pid and rss_every and answered % rss_every == 0:
                    rss_samples.append((answered, rss_mib(pid)))
                    print(json.dumps({"answered": answered, "rss_mib": rss_samples[-1][1],
                                      "elapsed_s": round(time.perf_counter() - wall, 1)}), flush=True)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    result = {
        "concurrency": concurrency, "requests": count, "wall_s": round(wall, 3),
        "throughput_rps": round(codes["OK"] / wall, 4) if wall > 0 else 0,
        "p50_s": round(percentile(latencies, 50), 4), "p99_s": round(percentile(latencies, 99), 4),
        "codes": dict(codes), "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "answers_by_model_digest": {k[:19]: v for k, v in sorted(digests.items())},
    }
    if len(rss_samples) >= 3:
        # Growth after warm-up: from the sample at 20% of the run to the last one (flat = a few MiB at most).
        base = rss_samples[max(0, len(rss_samples) // 5 - 1)]
        result["rss_growth_after_20pct_mib"] = round(rss_samples[-1][1] - base[1], 1)
        result["rss_max_mib"] = round(max(r for _, r in rss_samples), 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="host:port of a running cmn-server")
    parser.add_argument("--pid", type=int, help="its pid, for RSS")
    parser.add_argument("--server-bin", help="start this cmn-server instead (port 0)")
    parser.add_argument("--bundle", help="model bundle for --server-bin")
    parser.add_argument("--server-arg", action="append", default=[], help="extra dotted.key=value for --server-bin")
    parser.add_argument("--files", nargs="+", default=[
        os.path.join(ROOT, "..", "shared", "data", "dicom", "chest", "RG1_J2KI.dcm"),
        os.path.join(ROOT, "..", "shared", "data", "dicom", "chest", "RG1_JLSN.dcm")],
        help="the study sent by every request (default: the RG1 pair)")
    parser.add_argument("--levels", default="1,4,8,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--warmup", type=int, default=2, help="requests before the first level")
    parser.add_argument("--max-length", type=int, default=0, help="decoding.max_length override (0 = default)")
    parser.add_argument("--beam-size", type=int, default=0, help="decoding.beam_size override (0 = default)")
    parser.add_argument("--deadline-s", type=float, default=600)
    parser.add_argument("--reload-bundle", help="swap the server between its model and this bundle (ReloadModel)")
    parser.add_argument("--reload-every-s", type=float, default=5.0, help="seconds between swaps")
    parser.add_argument("--rss-every", type=int, default=0,
                        help="print the server's RSS every N answers (needs its pid; for soaks)")
    args = parser.parse_args()
    if not args.target and not (args.server_bin and args.bundle):
        parser.error("give --target HOST:PORT, or --server-bin and --bundle")

    import grpc
    with tempfile.TemporaryDirectory() as stubs:
        pb, pb_grpc = load_stubs(stubs)
        server = None
        target, pid = args.target, args.pid
        if not target:
            server, target = start_server(args)
            pid = server.pid
        try:
            channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
            stub = pb_grpc.ReportServiceStub(channel)
            request = pb.GenerateReportRequest()
            for path in args.files:
                with open(path, "rb") as f:
                    request.instances.add(data=f.read(), name=os.path.basename(path))
            request.decoding.max_length = args.max_length
            request.decoding.beam_size = args.beam_size
            for _ in range(args.warmup):
                stub.GenerateReport(request, timeout=args.deadline_s)
            results = []
            reloads, reload_errors, stop = [0], [], threading.Event()

            def reloader():
                # Alternates: the reload bundle, then the server's own model ("" = its configured one) again.
                targets = [args.reload_bundle, args.bundle or ""]
                while not stop.wait(args.reload_every_s):
                    try:
                        stub.ReloadModel(pb.ReloadModelRequest(bundle=targets[reloads[0] % 2]), timeout=600)
                        reloads[0] += 1
                    except grpc.RpcError as e:
                        reload_errors.append(e.code().name + ": " + e.details())

            swapper = threading.Thread(target=reloader) if args.reload_bundle else None
            if swapper:
                swapper.start()
            for level in [int(x) for x in args.levels.split(",")]:
                rss_start = rss_mib(pid) if pid else None
                result = run_level(stub, pb, request, level, args.requests, args.deadline_s, pid, args.rss_every)
                result["rss_start_mib"] = rss_start
                result["rss_end_mib"] = rss_mib(pid) if pid else None
                print(json.dumps(result), flush=True)
                results.append(result)
            if swapper:
                stop.set()
                swapper.join()
                print(json.dumps({"reloads": reloads[0], "reload_errors": reload_errors}), flush=True)
            by_level = {r["concurrency"]: r for r in results}
            if 1 in by_level and 8 in by_level:
                one, eight = by_level[1], by_level[8]
                print("throughput 8/1 = %.2fx (goal >= 1.5); p99@8 / p50@1 = %.2fx (goal <= 4)" % (
                    eight["throughput_rps"] / one["throughput_rps"], eight["p99_s"] / one["p50_s"]))
            errors = sum(n for r in results for code, n in r["codes"].items() if code != "OK")
            print("unexpected errors: %d" % errors)
        finally:
            if server:
                server.terminate()
                server.wait(timeout=120)


if __name__ == "__main__":
    main()
