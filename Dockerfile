# cmn on Debian 12, built from Debian's packages only (scripts/setup.sh), CPU LibTorch.
#   docker build -t cmn .
#   docker run -p 50051:50051 -p 9090:9090 -v /srv/bundles/iu_xray:/bundle:ro cmn \
#       --config /opt/cmn/configs/server.yaml model.bundle=/bundle model.allow_untrained=false
# The image runs cmn-server by default; the other tools are on PATH (docker run --entrypoint cmn-generate ...).

# ---- build: compilers and -dev packages, thrown away afterwards -------------------------------------------------
FROM debian:12-slim AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMN_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" \
 && mkdir -p /out/bin \
 && cp build/server/cmn-server build/pacs/cmn-pacs build/client/cmn-* build/bench/cmn-bench \
       build/train/metrics/cmn-eval build/train/metrics/cmn-label build/train/metrics/cmn-label-agreement \
       build/train/trainer/cmn-train build/phantom/cmn-phantom /out/bin/ \
 && strip /out/bin/*

# ---- runtime: shared libraries only ------------------------------------------------------------------------------
FROM debian:12-slim AS runtime
# The runtime halves of what setup.sh installs: LibTorch 1.13, OpenBLAS (OpenMP build; without it LibTorch falls
# back to netlib's reference BLAS, 14x slower), DCMTK, OpenJPEG, OpenCV core/imgproc/imgcodecs, gRPC, protobuf,
# abseil, yaml-cpp, glog, OpenSSL, cpp-httplib.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libdcmtk17 libopenjp2-7 libjpeg62-turbo \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libyaml-cpp0.7 libgoogle-glog0v6 libssl3 libcpp-httplib0.11 \
      ca-certificates \
 && for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do \
      cand=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-openmp | head -n1 || true); \
      if [ -n "$cand" ]; then update-alternatives --set "$alt" "$cand" >/dev/null; fi; \
    done \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cmn
COPY --from=build /out/bin/ /usr/local/bin/
COPY configs /opt/cmn/configs
USER 10001:10001
# gRPC, Prometheus metrics.
EXPOSE 50051 9090
# The standard grpc.health.v1 check against the service itself (NOT_SERVING while loading and while draining).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["cmn-client", "--server", "127.0.0.1:50051", "--health", "--service", "cmn.v1.ReportService", "--deadline-s", "4"]
# SIGTERM (docker stop, Kubernetes) drains: health NOT_SERVING, no new calls, in-flight calls finish, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cmn-server"]
CMD ["--config", "/opt/cmn/configs/server.yaml"]
