# cmn on Debian 12, built from Debian's packages only (scripts/setup.sh), CPU LibTorch.
FROM debian:12-slim AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMN_BUILD_TESTS=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /opt/cmn || cp build/client/cmn-* build/bench/cmn-bench /usr/local/bin/

FROM debian:12-slim
COPY scripts/setup.sh /tmp/setup.sh
# Runtime needs the same shared libraries (LibTorch, OpenBLAS, DCMTK, OpenCV, gRPC); the -dev packages bring them.
RUN bash /tmp/setup.sh && rm -rf /var/lib/apt/lists/* /tmp/setup.sh
COPY --from=build /usr/local/bin/cmn-* /usr/local/bin/
COPY configs /opt/cmn/configs
ENTRYPOINT ["cmn-generate"]
