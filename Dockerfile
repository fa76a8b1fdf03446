# bulwark container image: build on Debian 12, run on a slim Debian 12 with only the runtime
# libraries. Not built in CI here (no container engine on these machines); the build steps are
# the same ones scripts/test.sh runs.
FROM debian:12 AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config libuv1-dev node-llhttp libssl-dev libyaml-cpp-dev \
      prometheus-cpp-dev doctest-dev libre2-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBULWARK_TESTS=OFF && cmake --build build -j"$(nproc)" --target bulwark

# ca-certificates: a cluster with `tls: {}` verifies against the system trust store.
FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libuv1 libssl3 libyaml-cpp0.7 libprometheus-cpp-core1.0 libre2-9 ca-certificates \
      && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bulwark /usr/local/bin/bulwark
COPY config/examples/demo.yaml /etc/bulwark/bulwark.yaml
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/bulwark"]
CMD ["--config", "/etc/bulwark/bulwark.yaml"]
