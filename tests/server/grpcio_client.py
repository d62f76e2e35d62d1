#!/usr/bin/env python3
"""An independent client for cmn-server: Python's grpcio with stubs generated from proto/ at test time.

usage: grpcio_client.py PROTO_DIR OUT_DIR HOST:PORT FILE.dcm [FILE.dcm ...]
Prints one JSON object: the model info, a report, the health status, and the status code of a bad request.
Exit 0 when every check passed, 1 otherwise (the reason on stderr).
"""
import json
import subprocess
import sys


def main():
    proto_dir, out_dir, target, *files = sys.argv[1:]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir, "cmn/v1/report_service.proto"], check=True)
    sys.path.insert(0, out_dir)
    import grpc
    from cmn.v1 import report_service_pb2 as pb
    from cmn.v1 import report_service_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
    stub = pb_grpc.ReportServiceStub(channel)
    out = {}

    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    out["model"] = {"name": info.name, "digest": info.digest, "untrained": info.untrained, "views": info.views}

    request = pb.GenerateReportRequest(request_id="grpcio-1")
    for path in files:
        with open(path, "rb") as f:
            request.instances.add(data=f.read(), name=path.rsplit("/", 1)[-1])
    request.decoding.max_length = 6
    request.output.token_scores = True
    response = stub.GenerateReport(request, timeout=120)
    out["report"] = response.report
    out["token_ids"] = list(response.token_ids)
    out["slots"] = [s.sop_instance_uid for s in response.slots]
    out["request_id"] = response.request_id

    streamed = [m for m in stub.StreamReport(request, timeout=120)]
    out["stream_final_report"] = streamed[-1].final.report if streamed and streamed[-1].HasField("final") else None

    # grpc.health.v1.Health/Check, request and response hand-encoded ({1: service} -> {1: status}).
    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    name = b"cmn.v1.ReportService"
    health = check(b"\x0a" + bytes([len(name)]) + name, timeout=10)
    out["health_serving"] = health == b"\x08\x01"

    try:
        stub.GenerateReport(pb.GenerateReportRequest(instances=[pb.DicomInstance(data=b"not dicom")]), timeout=30)
        out["bad_request_code"] = "OK"
    except grpc.RpcError as e:
        out["bad_request_code"] = e.code().name

    print(json.dumps(out))
    problems = []
    if not out["report"]:
        problems.append("empty report")
    if out["stream_final_report"] != out["report"]:
        problems.append("StreamReport's final report differs from GenerateReport's")
    if not out["health_serving"]:
        problems.append("health is not SERVING")
    if out["bad_request_code"] != "INVALID_ARGUMENT":
        problems.append("bad request gave " + out["bad_request_code"])
    if out["request_id"] != "grpcio-1":
        problems.append("request_id not echoed")
    for p in problems:
        print("grpcio_client: " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
