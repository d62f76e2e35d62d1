#!/usr/bin/env python3
"""Seeds for cmn-generate-request-fuzzer: serialized cmn.v1.GenerateReportRequest messages around tiny made-up
DICOM instances (16x16 CR PA, DX lateral MONOCHROME1, its RLE copy, an 8x8 CT, a Basic Text SR without
pixels; no patient data), some with decoding and output options. Needs DCMTK's dump2dcm and dcmcrle, and protoc (its --encode from text format).

    python3 fuzz/make_request_seeds.py fuzz/corpus/generate_request
"""
import os
import subprocess
import sys
import tempfile

STUDY = "1.2.826.0.1.3680043.9.7777.1"


def make(work, name, modality, view, n, cls="ComputedRadiographyImageStorage", size=16, pixels=True,
         photometric="MONOCHROME2"):
    raw = os.path.join(work, name + ".raw")
    with open(raw, "wb") as f:
        f.write(bytes((x * 7 + y * 13) % 256 for y in range(size) for x in range(size)))
    lines = [f"(0008,0016) UI ={cls}", f"(0008,0018) UI [{STUDY}.{n}.1]", f"(0008,0060) CS [{modality}]",
             f"(0020,000d) UI [{STUDY}]", f"(0020,000e) UI [{STUDY}.{n}]", "(0020,0013) IS [1]"]
    if view:
        lines.append(f"(0018,5101) CS [{view}]")
    if pixels:
        lines += ["(0028,0002) US 1", f"(0028,0004) CS [{photometric}]", f"(0028,0010) US {size}",
                  f"(0028,0011) US {size}", "(0028,0100) US 8", "(0028,0101) US 8", "(0028,0102) US 7",
                  "(0028,0103) US 0", f"(7fe0,0010) OB ={raw}"]
    dump = os.path.join(work, name + ".dump")
    with open(dump, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["dump2dcm", "-q", dump, os.path.join(work, name + ".dcm")], check=True)


def request(work, out_dir, name, parts, extra=""):
    text = ""
    for p in parts:
        data = open(os.path.join(work, p + ".dcm"), "rb").read()
        text += 'instances { data: "%s" name: "%s.dcm" }\n' % ("".join("\\%03o" % c for c in data), p)
    proto_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
    with open(os.path.join(out_dir, name + ".bin"), "wb") as out:
        subprocess.run(["protoc", "--encode=cmn.v1.GenerateReportRequest", "-I", proto_root,
                        "cmn/v1/report_service.proto"], input=(text + extra).encode(), stdout=out, check=True)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        make(work, "pa", "CR", "PA", 1)
        make(work, "lat", "DX", "LL", 2, cls="DigitalXRayImageStorageForPresentation", photometric="MONOCHROME1")
        make(work, "ct", "CT", "", 3, cls="CTImageStorage", size=8)
        make(work, "sr", "SR", "", 4, cls="BasicTextSRStorage", pixels=False)
        subprocess.run(["dcmcrle", os.path.join(work, "lat.dcm"), os.path.join(work, "lat_rle.dcm")], check=True)
        request(work, out_dir, "pa_lat", ["pa", "lat"],
                'decoding { beam_size: 3 max_length: 40 method: DECODING_METHOD_BEAM_SEARCH }\n'
                'output { token_scores: true }\nrequest_id: "seed-1"\n')
        request(work, out_dir, "pa_only", ["pa"])
        request(work, out_dir, "pa_lat_rle", ["pa", "lat_rle"])
        request(work, out_dir, "mixed", ["pa", "ct", "sr", "lat", "pa"], "require_trained_model: true\n")
        # The decoding overrides and output options resolve_decoding and the memory estimate read.
        request(work, out_dir, "sample_clamped", ["pa", "lat"],
                'decoding { method: DECODING_METHOD_SAMPLE beam_size: 99 max_length: 1000 temperature: 0.7 '
                'seed: 7 }\noutput { attention_maps: true dicom_sr: true }\n')
        request(work, out_dir, "greedy_negative", ["pa"], 'decoding { method: DECODING_METHOD_GREEDY beam_size: -1 }\n')


if __name__ == "__main__":
    main()
